//! The stack's ceiling, for the benchmark: the least an actix-web + awc
//! reverse proxy can do (copy headers, stream the body, no routing, auth,
//! limits, logging or metrics). `bench/compare.sh` runs it beside
//! Portcullis so the cost of the gateway's own work can be read apart from
//! the cost of the HTTP stack it is built on.
//!
//! Usage: `bare_proxy LISTEN_PORT UPSTREAM_PORT` (both on 127.0.0.1).

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

struct Upstream(String);

async fn proxy(
    req: HttpRequest,
    client: web::Data<awc::Client>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let mut forwarded = client
        .request(req.method().clone(), format!("{}{}", upstream.0, req.uri()))
        .no_decompress();
    for (name, value) in req.headers() {
        if name != header::CONNECTION && name != header::HOST {
            forwarded = forwarded.insert_header((name.clone(), value.clone()));
        }
    }
    let Ok(response) = forwarded.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let mut out = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if name != header::CONNECTION && name != header::CONTENT_LENGTH {
            out.append_header((name.clone(), value.clone()));
        }
    }
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    out.body(SizedStream::new(length, response))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let [listen, upstream] = ports[..] else {
        eprintln!("usage: bare_proxy LISTEN_PORT UPSTREAM_PORT");
        std::process::exit(2);
    };
    let upstream = web::Data::new(Upstream(format!("http://127.0.0.1:{upstream}")));
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(awc::Client::new()))
            .app_data(upstream.clone())
            .default_service(web::to(proxy))
    })
    .workers(1)
    .bind(("127.0.0.1", listen))?
    .run()
    .await
}
