//! The "raw actix" baseline of DESIGN §10: the smallest actix-web server that reads the same
//! JSON body as the intake benchmark, parses it, and answers 200. `bench/intake.sh` runs it
//! next to triggerd in the same run so the ratio, not the machine, is what is reported.
//!
//! Run: `cargo run --release --example raw_actix -- 127.0.0.1:18081`

use actix_web::{web, App, HttpResponse, HttpServer};

async fn handle(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => HttpResponse::Ok().json(
            serde_json::json!({"status": "SUCCESS", "keys": v.as_object().map_or(0, |o| o.len())}),
        ),
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    HttpServer::new(|| App::new().default_service(web::to(handle)))
        .bind(addr)?
        .run()
        .await
}
