// granulo console: countdowns, live-update status, and the end of a session.
// No inline script anywhere (CSP script-src 'self'); everything hangs off data attributes.
(function (root) {
  "use strict";

  // --- Countdowns -------------------------------------------------------------------------
  // <span class="countdown" data-expires-at="RFC 3339" data-bands="28800,14400,7200"> counts
  // down h:mm:ss to the expiry and sets class band-0 … band-N (N = thresholds the time left is
  // at or under) or "expired" (at or under 0 s). The bands are the policy's alert thresholds in
  // seconds, as the server rendered them. domain::board::{expiry_band, expiry_label,
  // seconds_left, clock_text} decide the same on the server; a Rust test runs this file's
  // `granuloCountdown` over the same table.
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  // Whole seconds left, rounded up: half a second left is not expired yet.
  function secondsLeft(expiresAtMs, nowMs) { return Math.ceil((expiresAtMs - nowMs) / 1000); }

  function clockText(secs) {
    var s = Math.max(secs, 0);
    return Math.floor(s / 3600) + ":" + pad(Math.floor(s / 60) % 60) + ":" + pad(s % 60);
  }

  function describe(remaining, bands) {
    if (remaining <= 0) return { band: "expired", label: "expired" };
    if (!bands.length) return { band: "band-0", label: "not expired" };
    var band = 0, tightest = null, widest = bands[0];
    for (var i = 0; i < bands.length; i++) {
      if (bands[i] > widest) widest = bands[i];
      if (remaining <= bands[i]) {
        band++;
        if (tightest === null || bands[i] < tightest) tightest = bands[i];
      }
    }
    var label = tightest === null
      ? "more than " + widest / 3600 + " h left"
      : tightest / 3600 + " h or less left";
    return { band: "band-" + band, label: label };
  }

  root.granuloCountdown = { describe: describe, secondsLeft: secondsLeft, clockText: clockText };
  // Loaded outside a browser (the band table test): only the functions above.
  if (typeof document === "undefined") return;

  function tick() {
    var now = Date.now();
    var nodes = document.querySelectorAll("[data-expires-at]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var at = Date.parse(el.getAttribute("data-expires-at"));
      if (isNaN(at)) continue;
      var bands = (el.getAttribute("data-bands") || "").split(",").filter(Boolean).map(Number);
      var secs = secondsLeft(at, now);
      var d = describe(secs, bands);
      var clock = el.querySelector(".clock");
      var text = el.querySelector(".band-text");
      if (clock) clock.textContent = clockText(secs);
      if (text) text.textContent = d.label;
      var kept = el.className.split(/\s+/).filter(function (c) { return c && !/^(band-\d+|expired)$/.test(c); });
      kept.push(d.band);
      el.className = kept.join(" ");
    }
    // Counts that follow the page (the board's summary): <span data-count="<selector>">.
    var counts = document.querySelectorAll("[data-count]");
    for (var j = 0; j < counts.length; j++) {
      counts[j].textContent = String(document.querySelectorAll(counts[j].getAttribute("data-count")).length);
    }
  }

  // --- Live updates -----------------------------------------------------------------------
  function status(text, live) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.textContent = text;
    el.className = "live " + (live ? "on" : "off");
  }

  document.addEventListener("htmx:sseOpen", function () { status("Live: updates arrive as they happen.", true); });
  document.addEventListener("htmx:sseError", function () { status("Live updates interrupted; reconnecting…", false); });
  // The server ends the stream when the session ends: go to the sign-in page.
  document.addEventListener("htmx:sseMessage", function (e) {
    if (e.detail && e.detail.type === "signed-out") {
      window.location.assign("/console/login?ended=session_revoked");
    }
  });
  // A fragment the server refused because the session ended: sign in again.
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail && e.detail.xhr;
    if (xhr && xhr.status === 401) window.location.assign("/console/login?ended=session_revoked");
  });
  document.addEventListener("htmx:afterSwap", tick);

  // --- Scanning -----------------------------------------------------------------------------
  // A scanner types like a keyboard and ends with Enter, which submits the form natively; the
  // field is focused when the page opens so a scan needs no click.
  function focusScan() {
    var scan = document.querySelector("[data-scan-autofocus]");
    if (scan && document.activeElement === document.body) scan.focus();
  }

  function start() {
    tick();
    setInterval(tick, 1000);
    focusScan();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(typeof window !== "undefined" ? window : globalThis);
