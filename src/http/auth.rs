//! HTTP basic auth against the bcrypt hashes of `basic_auth_users`, for every
//! route.
//!
//! bcrypt is slow by design (tens of milliseconds at cost 10), so a scrape
//! storm must not pay it per request. As exporter-toolkit does, each verdict is
//! cached under a digest of (user, hash, password): a changed hash or password
//! is a new key, so a reload can never reuse a stale verdict. Cache misses run
//! one bcrypt at a time on the blocking pool, so a flood of new guesses costs
//! at most one core. An unknown user is checked against a dummy hash so that
//! timing does not reveal which users exist.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// Verdicts kept. Past it moka's TinyLFU admission keeps the verdicts used
/// often (every scraper's, on every scrape) and turns away one-off guesses,
/// so a burst of guessed passwords cannot evict the valid ones.
const VERDICTS_MAX: u64 = 1024;

/// A bcrypt hash (cost 10) of a random password, for unknown users.
const DUMMY_HASH: &str = "$2b$10$0xzBfTH4opW18La.IxYfmeZdHA9LTx4pNAq.dY0fxew2uo4XtdFmW";

type Digest = [u8; 32];

/// The users and the verdict cache. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BasicAuth {
    users: Arc<ArcSwap<BTreeMap<String, String>>>,
    verdicts: moka::future::Cache<Digest, bool>,
    bcrypt: Arc<tokio::sync::Mutex<()>>,
}

impl Default for BasicAuth {
    fn default() -> Self {
        Self {
            users: Arc::default(),
            verdicts: moka::future::Cache::new(VERDICTS_MAX),
            bcrypt: Arc::default(),
        }
    }
}

impl BasicAuth {
    pub(crate) fn new(users: BTreeMap<String, String>) -> Self {
        let auth = Self::default();
        auth.set_users(users);
        auth
    }

    /// Swaps in a reloaded user list.
    pub(crate) fn set_users(&self, users: BTreeMap<String, String>) {
        self.users.store(Arc::new(users));
    }

    /// Whether the request may proceed.
    async fn allows(&self, headers: &HeaderMap) -> bool {
        let users = self.users.load_full();
        if users.is_empty() {
            return true;
        }
        let Some((user, password)) = credentials(headers) else {
            return false;
        };
        let (hash, known) = match users.get(&user) {
            Some(hash) => (hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let key = digest(&user, hash, &password);
        if let Some(verdict) = self.verdicts.get(&key).await {
            return verdict && known;
        }
        let _one_at_a_time = self.bcrypt.lock().await;
        // Another request may have settled it while this one waited.
        if let Some(verdict) = self.verdicts.get(&key).await {
            return verdict && known;
        }
        let hash = hash.to_owned();
        let verdict = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        self.verdicts.insert(key, verdict).await;
        verdict && known
    }
}

/// `user` and `password` from `Authorization: Basic …`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn digest(user: &str, hash: &str, password: &str) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        // Length-prefixed, so ("a:b", "c") and ("a", "b:c") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The middleware: 401 with a `WWW-Authenticate` challenge unless allowed.
pub(crate) async fn require(
    State(auth): State<BasicAuth>,
    request: Request,
    next: Next,
) -> Response {
    if auth.allows(request.headers()).await {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"llm-cache-exporter\", charset=\"UTF-8\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn the_dummy_hash_is_a_cost_10_bcrypt_hash() {
        let parts: bcrypt::HashParts = DUMMY_HASH.parse().unwrap();
        assert_eq!(parts.get_cost(), 10);
    }

    #[tokio::test]
    async fn right_wrong_unknown_and_missing_credentials() {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_owned(), hash)]));
        assert!(auth.allows(&basic("alice", "s3cret:with colon")).await);
        assert!(!auth.allows(&basic("alice", "wrong")).await);
        assert!(!auth.allows(&basic("mallory", "s3cret:with colon")).await);
        assert!(!auth.allows(&HeaderMap::new()).await);
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!auth.allows(&bearer).await);
    }

    #[tokio::test]
    async fn verdicts_are_cached_and_a_new_hash_is_a_new_key() {
        let auth = BasicAuth::new(BTreeMap::from([(
            "alice".to_owned(),
            bcrypt::hash("one", 4).unwrap(),
        )]));
        for _ in 0..50 {
            assert!(auth.allows(&basic("alice", "one")).await);
        }
        auth.verdicts.run_pending_tasks().await;
        assert_eq!(auth.verdicts.entry_count(), 1);
        // A reload that changes the password takes effect at once.
        auth.set_users(BTreeMap::from([(
            "alice".to_owned(),
            bcrypt::hash("two", 4).unwrap(),
        )]));
        assert!(!auth.allows(&basic("alice", "one")).await);
        assert!(auth.allows(&basic("alice", "two")).await);
    }

    #[tokio::test]
    async fn a_burst_of_guesses_does_not_evict_a_scrapers_verdict() {
        let auth = BasicAuth::new(BTreeMap::from([(
            "prometheus".to_owned(),
            bcrypt::hash("pw", 4).unwrap(),
        )]));
        // A scraper that has been scraping for a while.
        for _ in 0..20 {
            assert!(auth.allows(&basic("prometheus", "pw")).await);
        }
        let users = auth.users.load_full();
        let valid = digest("prometheus", &users["prometheus"], "pw");
        // Four times the cache's size in one-off guesses; inserted directly,
        // as bcrypt would take minutes.
        for guess in 0..4 * VERDICTS_MAX {
            let key = digest("prometheus", &users["prometheus"], &guess.to_string());
            auth.verdicts.insert(key, false).await;
        }
        auth.verdicts.run_pending_tasks().await;
        assert!(auth.verdicts.entry_count() <= VERDICTS_MAX);
        assert_eq!(auth.verdicts.get(&valid).await, Some(true));
    }

    #[tokio::test]
    async fn htpasswd_style_2y_hashes_work() {
        // htpasswd -B writes $2y$; the algorithm is the same as $2b$.
        let hash = bcrypt::hash("pw", 4).unwrap().replacen("$2b$", "$2y$", 1);
        let auth = BasicAuth::new(BTreeMap::from([("ops".to_owned(), hash)]));
        assert!(auth.allows(&basic("ops", "pw")).await);
        assert!(!auth.allows(&basic("ops", "pW")).await);
    }

    #[tokio::test]
    async fn no_users_means_no_auth() {
        assert!(BasicAuth::default().allows(&HeaderMap::new()).await);
    }
}
