//! Keeping a long stream authorised: before the token's `exp` the agent sends
//! `{"type":"refresh","token":"…"}` with a fresher token from its [`TokenSource`] (the
//! server answers `refreshed` with the new `exp`, or closes 1008 with the reason). Without a
//! source the server closes the stream at `exp` (1008 `auth failed: token expired`).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use earshot_protocol::lifetime::unverified_exp;

/// The longest margin before `exp` at which a refresh is sent: a minute covers a slow token
/// source (a command asking an identity provider) and a retry or two.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Pause before asking a failed token source again. Short enough for several tries within
/// [`MAX_REFRESH_MARGIN`], long enough not to hammer an identity provider that is down.
pub const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A token source's answer: a fresh token, or why there is none (shown to the user).
pub type Fresh<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Where fresher tokens come from (minted with the local secret, a command, a closure).
pub trait TokenSource: Send {
    /// A token for the same subject, scope and meeting, valid for longer than the current one.
    fn fresh(&mut self) -> Fresh<'_>;
}

/// Any `FnMut() -> Result<String, String>` is a token source (tests, minting in-process).
impl<F> TokenSource for F
where
    F: FnMut() -> Result<String, String> + Send,
{
    fn fresh(&mut self) -> Fresh<'_> {
        let token = self();
        Box::pin(async move { token })
    }
}

/// When to refresh a token that expires at `exp` (unix seconds), seen at `now_ms`: a third of
/// its remaining life before `exp`, at most [`MAX_REFRESH_MARGIN`] before it. A 3 s token is
/// refreshed after 2 s; an hour's token a minute before it ends. Returns the wait from now.
pub fn refresh_after(exp: u64, now_ms: u64) -> Duration {
    let remaining = Duration::from_millis(exp.saturating_mul(1000).saturating_sub(now_ms));
    let margin = (remaining / 3).min(MAX_REFRESH_MARGIN);
    remaining - margin
}

/// A token source and the expiry of the token the connection holds now.
pub struct Refresher {
    source: Box<dyn TokenSource>,
    exp: u64,
    due: tokio::time::Instant,
}

impl Refresher {
    /// Refreshes `current` from `source`; `None` when `current` carries no readable `exp`
    /// (then there is nothing to plan by).
    pub fn new(current: &str, source: Box<dyn TokenSource>) -> Option<Refresher> {
        let exp = unverified_exp(current)?;
        Some(Refresher { source, exp, due: due_for(exp) })
    }

    /// When the next refresh is due.
    pub fn due(&self) -> tokio::time::Instant {
        self.due
    }

    /// The `exp` of the token the connection holds (as far as the agent knows).
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// Asks the source for a fresher token. On success the next refresh is planned from its
    /// `exp`; on failure the source is asked again after [`REFRESH_RETRY`].
    pub async fn next_token(&mut self) -> Result<String, String> {
        match self.source.fresh().await {
            Ok(token) => match unverified_exp(&token) {
                Some(exp) if exp > self.exp => {
                    self.exp = exp;
                    self.due = due_for(exp);
                    Ok(token)
                }
                Some(_) => {
                    self.due = tokio::time::Instant::now() + REFRESH_RETRY;
                    Err("the token source gave a token that expires no later than the current one".into())
                }
                None => {
                    self.due = tokio::time::Instant::now() + REFRESH_RETRY;
                    Err("the token source gave something that is not a JWT".into())
                }
            },
            Err(e) => {
                self.due = tokio::time::Instant::now() + REFRESH_RETRY;
                Err(e)
            }
        }
    }

    /// The server confirmed the refresh with `exp`.
    pub fn confirmed(&mut self, exp: u64) {
        if exp != self.exp {
            self.exp = exp;
            self.due = due_for(exp);
        }
    }
}

fn due_for(exp: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + refresh_after(exp, now_ms())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_with_a_third_of_the_life_left_at_most_a_minute_early() {
        let t0 = 1_700_000_000_000;
        assert_eq!(refresh_after(t0 / 1000 + 3, t0), Duration::from_secs(2));
        assert_eq!(refresh_after(t0 / 1000 + 3600, t0), Duration::from_secs(3540));
        assert_eq!(refresh_after(t0 / 1000 - 1, t0), Duration::ZERO, "already expired: now");
    }
}
