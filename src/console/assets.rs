//! The console's stylesheet and script, embedded in the binary and served with a long cache
//! lifetime under a path that names their content's hash, so a new build is never served a
//! stale copy.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use sha2::{Digest as _, Sha256};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// `/ui/assets/console-<hash>.css`.
pub(crate) static CSS_PATH: LazyLock<String> =
    LazyLock::new(|| format!("/ui/assets/console-{}.css", short_hash(CSS)));
/// `/ui/assets/console-<hash>.js`.
pub(crate) static JS_PATH: LazyLock<String> =
    LazyLock::new(|| format!("/ui/assets/console-{}.js", short_hash(JS)));

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/assets/{name}").route(web::get().to(asset)));
}

async fn asset(path: web::Path<String>) -> HttpResponse {
    let name = format!("/ui/assets/{}", path.into_inner());
    let (body, kind) = if name == *CSS_PATH {
        (CSS, "text/css; charset=utf-8")
    } else if name == *JS_PATH {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such asset\n");
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body)
}
