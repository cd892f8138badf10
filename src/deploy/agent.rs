//! The host agent: polls the environment pointer and deploys when it moves. Store
//! errors back off exponentially; a digest that failed its health check is not
//! retried until the pointer moves again. It stops between polls when `stop` resolves
//! (SIGTERM in the binary), never in the middle of a deploy.

use super::{converge, state, Notify, Options, Step};
use crate::release::env;
use crate::release::Ctx;
use anyhow::Result;
use std::future::Future;
use std::time::Duration;

/// The longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Polls every `interval` until `stop` resolves.
pub async fn run(
    ctx: &Ctx,
    o: &Options,
    interval: Duration,
    stop: impl Future<Output = ()>,
    notify: Notify<'_>,
) -> Result<()> {
    tokio::pin!(stop);
    let mut failures: u32 = 0;
    let mut skipped: Option<String> = None;
    loop {
        let wait = match poll(ctx, o, &mut skipped, notify).await {
            Ok(()) => {
                failures = 0;
                interval
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(interval, failures);
                notify(Step::Agent(format!(
                    "{e:#} (attempt {failures}; next try in {}s)",
                    wait.as_secs()
                )));
                wait
            }
        };
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `interval × 2^failures`, at most [`MAX_BACKOFF`] (or `interval` if longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    interval
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF.max(interval))
}

async fn poll(
    ctx: &Ctx,
    o: &Options,
    skipped: &mut Option<String>,
    notify: Notify<'_>,
) -> Result<()> {
    let r = env::resolve_env(&ctx.store, &o.app, &o.env).await?;
    let want = r.digest.to_string();
    let st = state::load(&state::path(&o.state_dir, &o.app, &o.env), &o.app, &o.env)?;
    if st.live.as_ref().is_some_and(|l| l.digest == want) {
        return Ok(());
    }
    let failed = st
        .last
        .as_ref()
        .is_some_and(|l| l.result == "failed" && l.digest == want);
    if failed {
        if skipped.as_deref() != Some(&want) {
            notify(Step::Agent(format!(
                "{}:{} ({want}) failed its deploy on this host: waiting for {} to move",
                o.app, r.image_tag, o.env
            )));
            *skipped = Some(want);
        }
        return Ok(());
    }
    notify(Step::Agent(format!(
        "{} {} now points at {}:{} (generation {}): deploying",
        o.app, o.env, o.app, r.image_tag, r.generation
    )));
    match converge(ctx, o, &r.image_tag, r.digest, "deployed", notify).await {
        Ok(out) => {
            notify(Step::Agent(format!(
                "{} {}: {} serves {}:{} on 127.0.0.1:{}",
                o.app, o.env, out.colour, o.app, out.image_tag, out.port
            )));
            Ok(())
        }
        // A failed health check is in the state now: reported once, not retried.
        Err(e)
            if state::load(&state::path(&o.state_dir, &o.app, &o.env), &o.app, &o.env)
                .ok()
                .and_then(|s| s.last)
                .is_some_and(|l| l.result == "failed" && l.digest == want) =>
        {
            notify(Step::Agent(format!("{e:#}")));
            *skipped = Some(want);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(30), 1), s(60));
        assert_eq!(backoff(s(30), 3), s(240));
        assert_eq!(backoff(s(30), 30), s(600));
        assert_eq!(backoff(s(900), 2), s(900));
    }
}
