//! Redis error replies: the closed set of codes the `code` label takes, and
//! the classifier that turns a `redis` crate error into a [`BackendError`]
//! with its `kind` and the codes it carries.

use crate::backends::{Backend, BackendError, ErrorKind};
use crate::metrics::label_values;
use crate::secret::Secret;

label_values! {
    /// A Redis error reply's code, as the `code` label spells it.
    pub(crate) enum ReplyCode {
        ReadOnly => "READONLY",
        Oom => "OOM",
        NoPerm => "NOPERM",
        NoAuth => "NOAUTH",
        WrongPass => "WRONGPASS",
        Moved => "MOVED",
        Ask => "ASK",
        TryAgain => "TRYAGAIN",
        ClusterDown => "CLUSTERDOWN",
        Loading => "LOADING",
        MasterDown => "MASTERDOWN",
        Busy => "BUSY",
        ExecAbort => "EXECABORT",
        Other => "other",
    }
}

impl ReplyCode {
    /// The code's label; a code outside the set is `other`.
    pub(crate) fn of(code: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|known| known.as_str() == code)
            .unwrap_or(Self::Other)
    }
}

/// What a `redis` crate error means for the canary: its `kind`, and the
/// error codes in it, each once (an aborted `MULTI` carries the code that
/// refused its commands, e.g. `OOM`). The message is scrubbed of `secrets`.
pub(super) fn classify(
    err: &redis::RedisError,
    secrets: &[Secret],
) -> (BackendError, Vec<ReplyCode>) {
    let mut codes: Vec<ReplyCode> = match err.clone().into_server_errors() {
        Some(errors) => errors
            .iter()
            .map(|(_, e)| ReplyCode::of(e.code()))
            .collect(),
        None => err.code().map(ReplyCode::of).into_iter().collect(),
    };
    codes.sort();
    codes.dedup();
    let auth = |code: &ReplyCode| {
        matches!(
            code,
            ReplyCode::NoAuth | ReplyCode::WrongPass | ReplyCode::NoPerm
        )
    };
    use redis::ErrorKind as K;
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if codes.iter().any(auth) || err.kind() == K::AuthenticationFailed {
        ErrorKind::Auth
    } else if !codes.is_empty() {
        ErrorKind::Server
    } else if matches!(err.kind(), K::Parse | K::UnexpectedReturnType) {
        ErrorKind::Protocol
    } else {
        ErrorKind::Connection
    };
    let mut message = err.to_string();
    for secret in secrets {
        message = secret.scrub(&message);
    }
    if message.contains("cluster support disabled") {
        message = format!("--redis.mode cluster, but this node is not a cluster node: {message}");
    }
    if message.contains("CaUsedAsEndEntity") {
        message.push_str(
            " (the server's certificate is itself a CA certificate: sign a leaf certificate \
             with a CA, as Redis's gen-test-certs.sh does; see the README's TLS section)",
        );
    }
    (BackendError::new(Backend::Redis, kind, message), codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_come_from_a_closed_set() {
        assert_eq!(ReplyCode::of("OOM"), ReplyCode::Oom);
        assert_eq!(ReplyCode::of("READONLY"), ReplyCode::ReadOnly);
        assert_eq!(ReplyCode::of("ERR"), ReplyCode::Other);
        assert_eq!(ReplyCode::of("oom"), ReplyCode::Other);
    }

    #[test]
    fn auth_refusals_are_auth_and_secrets_are_scrubbed() {
        let err = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
            "hunter2 was refused".to_owned(),
        ));
        let (error, _) = classify(&err, &[Secret::new("hunter2")]);
        assert_eq!(error.kind, ErrorKind::Auth);
        assert!(!error.message.contains("hunter2"), "{}", error.message);
    }
}
