// granulo console: countdowns, live-update status, and the end of a session.
// No inline script anywhere (CSP script-src 'self'); everything hangs off data attributes.
(function () {
  "use strict";

  // --- Countdowns -------------------------------------------------------------------------
  // <span class="countdown" data-expires-at="RFC 3339" data-bands="28800,14400,7200"> counts
  // down h:mm:ss to the expiry and sets class band-0 … band-N (N = thresholds passed) or
  // "expired". The bands are the policy's alert thresholds in seconds, largest first, as the
  // server rendered them (domain::units::expiry_band decides the same on the server).
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function describe(remaining, bands) {
    if (remaining <= 0) return { band: "expired", label: "expired" };
    var band = 0, label = "more than " + Math.round(bands[0] / 3600) + " h left";
    for (var i = 0; i < bands.length; i++) {
      if (remaining <= bands[i]) { band = i + 1; label = "under " + Math.round(bands[i] / 3600) + " h left"; }
    }
    if (!bands.length) label = "";
    return { band: "band-" + band, label: label };
  }

  function tick() {
    var now = Date.now();
    var nodes = document.querySelectorAll("[data-expires-at]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var at = Date.parse(el.getAttribute("data-expires-at"));
      if (isNaN(at)) continue;
      var bands = (el.getAttribute("data-bands") || "").split(",").filter(Boolean).map(Number);
      var secs = Math.floor((at - now) / 1000);
      var d = describe(secs, bands);
      var clock = el.querySelector(".clock");
      var text = el.querySelector(".band-text");
      if (clock) {
        var s = Math.max(secs, 0);
        clock.textContent = Math.floor(s / 3600) + ":" + pad(Math.floor(s / 60) % 60) + ":" + pad(s % 60);
      }
      if (text) text.textContent = d.label;
      var cls = el.className.replace(/\b(band-\d+|expired)\b/g, "").trim();
      el.className = cls + " " + d.band;
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
})();
