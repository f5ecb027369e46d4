//! A browser's view of the console for the Rust tests: cookies kept by hand, forms posted as
//! `application/x-www-form-urlencoded`, the CSRF token read from the page like a browser would.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::helpers::*;

/// An HTML answer.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The `Set-Cookie` header for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// Assert status and that the page is HTML; returns the text.
    pub fn ok(&self, status: u16) -> &str {
        assert_eq!(self.status.as_u16(), status, "status; page: {}", self.text);
        assert!(
            self.header("content-type").starts_with("text/html"),
            "content type {}",
            self.header("content-type")
        );
        &self.text
    }

    /// The value of the first hidden `csrf` field on the page.
    pub fn csrf(&self) -> Option<String> {
        let re = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#).expect("regex");
        re.captures(&self.text).map(|c| c[1].to_owned())
    }
}

/// A signed-in browser.
pub struct Console {
    pub base: String,
    pub client: reqwest::Client,
    /// `name=value` of the session cookie ("" when signed out).
    pub cookie: String,
    pub csrf: String,
    pub mfa: MfaBook,
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").trim().to_owned()
}

impl Console {
    pub fn anonymous(app: &TestApp) -> Self {
        Self {
            base: app.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: String::new(),
            csrf: String::new(),
            mfa: app.mfa.clone(),
        }
    }

    /// Sign in through the form; panics unless the answer is the redirect to the board.
    pub async fn sign_in(app: &TestApp, username: &str, password: &str) -> Self {
        let mut console = Self::anonymous(app);
        let page = console.try_sign_in(username, password).await;
        // 303 to the board, or (after enrolling) the page of recovery codes with the session.
        let status = page.status.as_u16();
        assert!(
            status == 303 || (status == 200 && page.text.contains("recovery-codes")),
            "sign-in; page: {}",
            page.text
        );
        let set = page
            .set_cookie("granulo_console")
            .or_else(|| page.set_cookie("__Host-granulo_console"))
            .expect("a session cookie");
        console.cookie = cookie_pair(&set);
        let board = console.get("/console/board").await;
        console.csrf = board.csrf().expect("the board carries a CSRF token");
        console
    }

    /// Sign in as the test admin.
    pub async fn admin(app: &TestApp) -> Self {
        Self::sign_in(app, ADMIN_USER, ADMIN_PASSWORD).await
    }

    /// Create a staff account with `role` (and the test password) and sign it in; also
    /// returns its username (for the API token of the same person: `app.token(name, PASSWORD)`).
    pub async fn as_role(app: &mut TestApp, role: &str) -> (Self, String) {
        let username = format!(
            "{}-{}",
            role.replace('_', "-"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        app.create_user(&username, role, None).await;
        (Self::sign_in(app, &username, PASSWORD).await, username)
    }

    /// GET the sign-in form, then post it: the answer to the post.
    pub async fn try_sign_in(&mut self, username: &str, password: &str) -> Page {
        let form = self.get("/console/login").await;
        let login_cookie = form
            .set_cookie("granulo_login")
            .map(|c| cookie_pair(&c))
            .unwrap_or_default();
        let csrf = form.csrf().unwrap_or_default();
        let req = self
            .client
            .post(format!("{}/console/login", self.base))
            .header("cookie", login_cookie)
            .form(&[("username", username), ("password", password), ("csrf", &csrf)]);
        let page = read(req).await;
        match page.set_cookie("granulo_mfa") {
            Some(challenge) if page.status.as_u16() == 200 => {
                self.second_step(username, &page, &cookie_pair(&challenge)).await
            }
            _ => page,
        }
    }

    /// The page after the password asks for a code, or for enrolment: answer as an
    /// authenticator app would.
    pub async fn second_step(&self, username: &str, page: &Page, challenge_cookie: &str) -> Page {
        let csrf = page.csrf().unwrap_or_default();
        let enrol = page.text.contains(r#"action="/console/login/enrol""#);
        if enrol {
            let re = regex::Regex::new(r#"id="mfa-secret">([A-Z2-7]+)<"#).expect("regex");
            let secret = re
                .captures(&page.text)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_owned())
                .expect("the enrolment page shows the secret");
            self.mfa.remember(username, &secret);
        }
        let path = if enrol {
            "/console/login/enrol"
        } else {
            "/console/login/mfa"
        };
        let code = self.mfa.next_code(username).await;
        let next = regex::Regex::new(r#"name="next" value="([^"]+)""#)
            .expect("regex")
            .captures(&page.text)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned());
        let mut fields = vec![("code", code.clone()), ("csrf", csrf)];
        if let Some(next) = next {
            fields.push(("next", next));
        }
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", challenge_cookie)
            .form(&fields);
        read(req).await
    }

    pub async fn get(&self, path: &str) -> Page {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if !self.cookie.is_empty() {
            req = req.header("cookie", &self.cookie);
        }
        read(req).await
    }

    /// Post a form with the session's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &self.csrf));
        self.post_raw(path, &all).await
    }

    /// Post exactly these fields (no CSRF token unless given).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut req = self.client.post(format!("{}{path}", self.base)).form(fields);
        if !self.cookie.is_empty() {
            req = req.header("cookie", &self.cookie);
        }
        read(req).await
    }
}

/// Every HTML answer the tests read is checked for inline code.
async fn read(req: reqwest::RequestBuilder) -> Page {
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body read");
    let page = Page { status, headers, text };
    if page.header("content-type").starts_with("text/html") {
        assert_no_inline_code(&page.text);
    }
    page
}

/// No inline script, style or event handler anywhere: the CSP would block them anyway.
pub fn assert_no_inline_code(html: &str) {
    let inline_script = regex::Regex::new(r"<script(?:\s[^>]*)?>").expect("regex");
    for tag in inline_script.find_iter(html) {
        assert!(tag.as_str().contains(" src="), "inline script {}", tag.as_str());
    }
    let attrs = regex::Regex::new(r#"\s(style|on[a-z]+|hx-on[a-z:-]*)="#).expect("regex");
    assert!(
        attrs.find(html).is_none(),
        "inline style or handler: {:?}",
        attrs.find(html)
    );
}
