//! The gateway's own session endpoints on the proxy listener: the login page
//! and form, JSON login, logout and the current-session view.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{
    clear_cookie, csrf, rfc3339, session_cookie, session_cookie_value, LoginError, Origin,
    Rejection,
};
use crate::config::Config;
use crate::error::GatewayError;
use crate::pipeline::RequestCtx;
use crate::proxy::read_body;
use crate::state::AppState;

/// Largest login body accepted.
const LOGIN_BODY_LIMIT: u64 = 16 * 1024;

/// The gateway's own session endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Logout,
    Session,
}

/// The session endpoint a request's match key names, if any; they take
/// precedence over routes, and are matched like routes (any case, `;`
/// parameters and a trailing slash ignored).
pub fn endpoint(key: &str, config: &Config) -> Option<Endpoint> {
    let s = &config.session;
    [
        (&s.login_path, Endpoint::Login),
        (&s.logout_path, Endpoint::Logout),
        (&s.session_path, Endpoint::Session),
    ]
    .into_iter()
    .find(|(path, _)| key.eq_ignore_ascii_case(path))
    .map(|(_, endpoint)| endpoint)
}

/// Answers a request for one of the session endpoints.
pub async fn dispatch(
    endpoint: Endpoint,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    config: &Config,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let method = req.method();
    // Every answer here depends on credentials, errors included.
    ctx.no_store = true;
    // Login and logout are CSRF-checked like any cookie-authenticated unsafe
    // request: no other site may sign a user in to an account of its choosing.
    if !csrf::allows(req, &config.session, ctx.peer_trusted) {
        return Err(GatewayError::CsrfRejected);
    }
    let not_allowed = |allow: &str| {
        Err(GatewayError::MethodNotAllowed {
            allow: allow.into(),
        })
    };
    match (endpoint, method.clone()) {
        (Endpoint::Login, Method::GET | Method::HEAD) => Ok(login_page(
            req.query_string(),
            None,
            actix_web::http::StatusCode::OK,
        )),
        (Endpoint::Login, Method::POST) => login(req, payload, state, config, ctx).await,
        (Endpoint::Login, _) => not_allowed("GET, HEAD, POST"),
        (Endpoint::Logout, Method::POST) => logout(req, state, config, ctx).await,
        (Endpoint::Logout, _) => not_allowed("POST"),
        (Endpoint::Session, Method::GET | Method::HEAD) => {
            current_session(req, state, config, ctx).await
        }
        (Endpoint::Session, _) => not_allowed("GET, HEAD"),
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    config: &Config,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = read_body(req, payload, LOGIN_BODY_LIMIT, config.server.body_timeout).await?;
    ctx.bytes_in = body.len() as u64;
    let parsed = if is_form {
        serde_urlencoded::from_bytes::<Credentials>(&body).ok()
    } else {
        serde_json::from_slice::<Credentials>(&body).ok()
    };
    let Credentials {
        username,
        password,
        next,
    } = parsed.ok_or_else(|| {
        GatewayError::BadRequest(
            "expected JSON or a form with \"username\" and \"password\"".into(),
        )
    })?;
    let failed = |outcome: &str| {
        state.metrics.logins.with_label_values(&[outcome]).inc();
        if is_form {
            let query = serde_urlencoded::to_string([("next", next.as_deref().unwrap_or("/"))])
                .unwrap_or_default();
            return Ok(login_page(
                &query,
                Some("Invalid username or password."),
                actix_web::http::StatusCode::UNAUTHORIZED,
            ));
        }
        Err(GatewayError::InvalidCredentials)
    };
    let user = match state
        .auth
        .check_login(config, &username, password, ctx.client_ip)
        .await
    {
        Ok(user) => user,
        Err(LoginError::Invalid) => return failed("failure"),
        Err(refused) => {
            state
                .metrics
                .logins
                .with_label_values(&[refused.outcome()])
                .inc();
            return Err(refused.into());
        }
    };
    let origin = Origin::new(
        Some(ctx.client_ip.to_string()),
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let issued = state
        .auth
        .issue(&user, config.session.max_lifetime, origin)
        .await?;
    state.metrics.logins.with_label_values(&["success"]).inc();
    ctx.identify(&user, &issued.session, "login");
    let cookie = session_cookie(&config.session, &issued.token, issued.session.expires_at);
    let mut response = if is_form {
        let mut r = HttpResponse::SeeOther();
        r.insert_header((header::LOCATION, safe_next(next.as_deref())));
        r
    } else {
        HttpResponse::Ok()
    };
    response.insert_header((header::SET_COOKIE, cookie));
    Ok(if is_form {
        response.finish()
    } else {
        response.json(serde_json::json!({
            "user": &*user.name,
            "session_id": &*issued.session.id,
            "expires_at": rfc3339(issued.session.expires_at),
        }))
    })
}

async fn logout(
    req: &HttpRequest,
    state: &AppState,
    config: &Config,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    // The cookie goes whatever happens next.
    ctx.set_cookie = Some(clear_cookie(&config.session));
    if let Some(token) = session_cookie_value(req.headers(), &config.session.cookie_name) {
        match state.auth.authenticate(token, &config.session).await {
            Ok(principal) => {
                ctx.identify(&principal.user, &principal.session, "logout");
                // Durable before we answer: a logout must survive a crash.
                // If storage fails, the session still ends here, and the answer says so.
                state.auth.revoke(&principal.session.id).await?;
            }
            Err(rejection @ Rejection::TokenReused(_)) => {
                ctx.reject(rejection, state);
            }
            Err(_) => {}
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "logged_out"})))
}

async fn current_session(
    req: &HttpRequest,
    state: &AppState,
    config: &Config,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let token = session_cookie_value(req.headers(), &config.session.cookie_name)
        .ok_or(Rejection::MissingToken);
    let principal = match token {
        Ok(token) => state.auth.authenticate(token, &config.session).await,
        Err(missing) => Err(missing),
    }
    .map_err(|rejection| ctx.reject(rejection, state))?;
    ctx.identify(&principal.user, &principal.session, "authenticated");
    let session = &principal.session;
    if let Some(token) = &principal.rotated_token {
        ctx.set_cookie = Some(session_cookie(&config.session, token, session.expires_at));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": &*principal.user.name,
        "roles": principal.user.roles,
        "permissions": principal.user.permissions,
        "session_id": &*session.id,
        "created_at": rfc3339(session.created_at),
        "idle_expires_at": rfc3339(session.idle_expires_at(config.session.idle_timeout).min(session.expires_at)),
        "expires_at": rfc3339(session.expires_at),
    })))
}

/// A same-site relative path to go to after login; anything else (absolute
/// URLs, `//host`, backslashes, control characters) becomes `/`, so the
/// login form can never be used as an open redirect.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= 2048
                && !n.bytes().any(|b| b.is_ascii_control() || b == b'\\') =>
        {
            n
        }
        _ => "/",
    }
}

/// The built-in login page.
fn login_page(
    query: &str,
    error: Option<&str>,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    #[derive(Deserialize)]
    struct Next {
        next: Option<String>,
    }
    let next = serde_urlencoded::from_str::<Next>(query)
        .ok()
        .and_then(|q| q.next);
    let next = escape(safe_next(next.as_deref()));
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let html = LOGIN_PAGE
        .replace("{{next}}", &next)
        .replace("{{error}}", &error);
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .body(html)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f5f7;display:flex;justify-content:center;padding-top:10vh;margin:0}
form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);width:18rem}
h1{font-size:1.25rem;margin:0 0 1rem}
label{display:block;margin:.75rem 0 .25rem;font-size:.9rem}
input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:1.25rem;width:100%;padding:.6rem;font-size:1rem;cursor:pointer}
.error{color:#b00020;margin:0 0 .5rem}
</style>
</head>
<body>
<form method="post">
<h1>Sign in</h1>
{{error}}
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{{next}}">
<button type="submit">Sign in</button>
</form>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_same_site_relative_path() {
        assert_eq!(safe_next(Some("/app?x=1")), "/app?x=1");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("//evil.example/x")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/a\r\nSet-Cookie: x")), "/");
        assert_eq!(safe_next(Some("javascript:alert(1)")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
