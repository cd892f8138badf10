//! Blue-green deploy on one host: an environment's image is pulled into the local
//! engine, started as the idle colour (`APP-ENV-blue` / `APP-ENV-green`) on a free
//! 127.0.0.1 port, health-checked, and only then given the traffic; the old colour is
//! drained and kept stopped for an instant rollback.
//!
//! Crash safety: the host state ([`state`]) is written before and after each traffic
//! switch, so whatever step a deploy dies at, either the old or the new colour serves,
//! and the next deploy first finishes or undoes the interrupted switch ([`reconcile`]).
//! The containers' labels are the ground truth the state is checked against.

pub mod agent;
pub mod engine;
pub mod health;
pub mod state;
pub mod switch;

use crate::archive::Format;
use crate::model::digest::Digest;
use crate::model::reference::Reference;
use crate::release::audit::{self, DeployPrevious, DeployTarget, Event, What, MAX_ERROR};
use crate::release::env::{self, RolledBack};
use crate::release::Ctx;
use crate::transfer::pull::{pull, resolve, PullOptions};
use crate::transfer::stats::Stats;
use anyhow::{anyhow, bail, Context, Result};
use engine::{Container, Engine, RunSpec};
use serde::Serialize;
use state::{HostState, LastDeploy, Slot};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch::{Route, Switch};

/// Seconds a stopped colour gets to finish its requests.
const STOP_GRACE_SECS: u64 = 10;

/// How one environment is deployed on this host.
#[derive(Debug, Clone)]
pub struct Options {
    pub app: String,
    pub env: String,
    pub engine: Engine,
    pub state_dir: PathBuf,
    /// Where clients reach the environment (nginx listens there); the switch is
    /// confirmed through it.
    pub public_port: u16,
    pub container_port: u16,
    pub health_path: String,
    pub health_timeout: Duration,
    /// How long the old colour keeps running after the switch, for requests in flight.
    pub drain: Duration,
    pub switch: Switch,
    /// Extra `docker run` arguments.
    pub run_args: Vec<String>,
    pub cache: Option<PathBuf>,
    /// None: this host's (and a single-platform image must match it).
    pub platform: Option<String>,
}

/// What a deploy is doing, for the binary to show.
#[derive(Debug, Clone)]
pub enum Step {
    Recovered(String),
    Pulling {
        image: String,
    },
    Present {
        image: String,
    },
    Starting {
        colour: String,
        port: u16,
    },
    Reusing {
        colour: String,
        port: u16,
    },
    Healthy {
        colour: String,
        answer: String,
    },
    Switched {
        colour: String,
        port: u16,
    },
    Stopped {
        colour: String,
    },
    /// `S3DOCK_DEPLOY_PAUSE_AT` stopped the deploy here (tests kill it there).
    Paused(&'static str),
    /// The agent saw a new target, skipped one, or failed and backs off.
    Agent(String),
}

pub type Notify<'a> = &'a (dyn Fn(Step) + Send + Sync);

/// What a deploy (or rollback) did on this host.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub app: String,
    pub env: String,
    /// `deployed`, `unchanged` or `rolled-back`.
    pub result: String,
    pub colour: String,
    pub digest: String,
    pub image_tag: String,
    pub port: u16,
    pub previous: Option<Slot>,
    pub duration_secs: f64,
    /// Key of the audit event, or why it could not be written (the host's store
    /// access may be read-only).
    pub event: Option<String>,
    pub event_error: Option<String>,
}

/// `deploy APP ENV`: makes this host serve what the environment points at.
pub async fn deploy(ctx: &Ctx, o: &Options, notify: Notify<'_>) -> Result<Outcome> {
    let r = env::resolve_env(&ctx.store, &o.app, &o.env).await?;
    converge(ctx, o, &r.image_tag, r.digest, "deployed", notify).await
}

/// `rollback APP ENV`: the environment pointer goes back one generation, then this
/// host serves it (the kept, stopped colour is restarted when it holds that image).
/// The rollback event is written with the pointer, before the host acts, so that a
/// rollback killed half-way still leaves the generation it wrote explained (the next
/// rollback reads it); it names this host and how long the store-side move took. The
/// host's own switch is the `deploy` event that `converge` writes, with its duration.
pub async fn rollback(ctx: &Ctx, o: &Options, notify: Notify<'_>) -> Result<(RolledBack, Outcome)> {
    let rb = env::rollback(ctx, &o.app, &o.env, Some(audit::hostname())).await?;
    let r = env::resolve_env(&ctx.store, &o.app, &o.env).await?;
    let out = converge(ctx, o, &r.image_tag, r.digest, "rolled-back", notify)
        .await
        .with_context(|| {
            format!(
                "{} {} rolled back in the store, but this host does not serve it",
                o.app, o.env
            )
        })?;
    Ok((rb, out))
}

/// What `status` shows: the host state and whether its containers are there.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub state: HostState,
    pub live_running: bool,
    /// The previous colour's container is still there (rollback is instant).
    pub previous_kept: bool,
}

pub fn status(
    engine: &Engine,
    state_dir: &std::path::Path,
    app: &str,
    env: &str,
) -> Result<Status> {
    crate::release::records::check_app_name(app)?;
    crate::release::records::check_env_name(env)?;
    let st = state::load(&state::path(state_dir, app, env), app, env)?;
    let live_running = match &st.live {
        Some(l) => engine.inspect(&l.container)?.is_some_and(|c| c.running),
        None => false,
    };
    let previous_kept = match &st.previous {
        Some(p) => engine.inspect(&p.container)?.is_some(),
        None => false,
    };
    Ok(Status {
        state: st,
        live_running,
        previous_kept,
    })
}

pub fn container_name(app: &str, env: &str, colour: &str) -> String {
    format!("{}-{env}-{colour}", app.replace('/', "_"))
}

fn deploy_label(app: &str, env: &str) -> String {
    format!("{app}:{env}")
}

fn now() -> String {
    audit::rfc3339(audit::now())
}

/// Test hook: `S3DOCK_DEPLOY_PAUSE_AT=STEP` makes the deploy wait forever at STEP.
async fn pause_at(step: &'static str, notify: Notify<'_>) {
    if std::env::var("S3DOCK_DEPLOY_PAUSE_AT").as_deref() == Ok(step) {
        notify(Step::Paused(step));
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

fn slot_of(c: &Container, since: String) -> Option<Slot> {
    Some(Slot {
        colour: c.label(engine::LABEL_COLOUR)?.to_string(),
        container: c.name.clone(),
        digest: c.label(engine::LABEL_DIGEST)?.to_string(),
        image_tag: c.label(engine::LABEL_IMAGE_TAG).unwrap_or("").to_string(),
        port: c.label(engine::LABEL_PORT)?.parse().ok()?,
        since,
    })
}

fn route<'a>(o: &'a Options, s: &'a Slot) -> Route<'a> {
    Route {
        app: &o.app,
        env: &o.env,
        colour: &s.colour,
        port: s.port,
        digest: &s.digest,
    }
}

async fn probe(port: u16, path: &str) -> Result<health::Answer, String> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || health::get(port, &path, Duration::from_secs(2)))
        .await
        .map_err(|e| e.to_string())?
}

/// Waits until `name` runs and answers 2xx on the health path, within the timeout.
async fn wait_healthy(o: &Options, name: &str, port: u16) -> Result<health::Answer, String> {
    let deadline = Instant::now() + o.health_timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        let last = match o.engine.inspect(name) {
            Ok(Some(c)) if c.running => {
                let answer = probe(port, &o.health_path).await;
                if answer.as_ref().is_ok_and(health::Answer::ok) {
                    return answer;
                }
                answer
            }
            Ok(_) => Err(format!(
                "container {name} is not running: {}",
                o.engine.logs_tail(name, 5)
            )),
            Err(e) => Err(e.to_string()),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "not healthy within {:?}: GET {} answered {}",
                o.health_timeout,
                o.health_path,
                health::describe(&last)
            ));
        }
        // Soon at first (a kept colour restarted for a rollback answers within
        // milliseconds), every 200 ms for an app that takes its time.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// How long every fresh connection to the public port must reach the new colour before
/// a switch counts as done: nginx's master lets the old workers accept for 100 ms after
/// starting the new ones (and longer on a busy host), so one good answer can come from
/// a new worker while an old one still routes new connections the old way.
const SWITCH_SETTLE: Duration = Duration::from_millis(250);

/// Moves traffic to `to` and, with nginx, confirms through the public port that the
/// new colour answers (the same health answer as the colour itself gives), on every
/// fresh connection for [`SWITCH_SETTLE`].
async fn switch_to(o: &Options, to: &Slot) -> Result<()> {
    o.switch.apply(&route(o, to))?;
    if !matches!(o.switch, Switch::Nginx { .. }) {
        return Ok(());
    }
    let deadline = Instant::now() + o.health_timeout;
    let mut direct = probe(to.port, &o.health_path).await;
    let mut since: Option<Instant> = None;
    loop {
        let public = probe(o.public_port, &o.health_path).await;
        match (&direct, &public) {
            (Ok(d), Ok(p)) if p.ok() && d.body == p.body => {
                let first = *since.get_or_insert_with(Instant::now);
                if first.elapsed() >= SWITCH_SETTLE {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // nginx's new workers take over a few ms after the reload: ask again soon.
            _ if Instant::now() < deadline => {
                since = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if public.as_ref().is_ok_and(health::Answer::ok) {
                    // Still the old colour's answer, or the new one changed its own.
                    direct = probe(to.port, &o.health_path).await;
                }
            }
            _ => bail!(
                "traffic switch not confirmed: 127.0.0.1:{} answered {} while the {} colour answers {}",
                o.public_port,
                health::describe(&public),
                to.colour,
                health::describe(&direct)
            ),
        }
    }
}

/// Brings the state in line with the engine, finishing or undoing a switch that a
/// crash interrupted, restarting a live colour that is not running and stopping a
/// previous colour that still runs.
///
/// Returns the containers found when nothing was started, stopped or removed here
/// (still accurate, so the caller need not ask the engine again), else None.
async fn reconcile(
    o: &Options,
    st: &mut HostState,
    notify: Notify<'_>,
) -> Result<Option<Vec<Container>>> {
    let e = &o.engine;
    let found =
        e.inspect_all(&e.with_label(engine::LABEL_DEPLOY, &deploy_label(&o.app, &o.env))?)?;
    let mut fresh = true;
    // Whether `name` runs: from `found` while nothing has changed since.
    let runs = |fresh: bool, name: &str| -> Result<bool> {
        if fresh {
            Ok(found.iter().any(|c| c.name == name && c.running))
        } else {
            Ok(e.inspect(name)?.is_some_and(|c| c.running))
        }
    };
    let present = |s: &Option<Slot>| {
        s.as_ref()
            .is_some_and(|s| found.iter().any(|c| c.name == s.container))
    };
    for s in [&mut st.live, &mut st.previous, &mut st.switching] {
        if !present(s) {
            *s = None;
        }
    }
    if st.live.is_none() && st.switching.is_none() {
        // State lost: the running colour the switch points at, else any running one.
        let routed = o.switch.current_port();
        let mut running: Vec<&Container> = found.iter().filter(|c| c.running).collect();
        running.sort_by_key(|c| routed != c.label(engine::LABEL_PORT).and_then(|p| p.parse().ok()));
        if let Some(c) = running.first() {
            st.live = slot_of(c, c.started_at.clone());
            if let Some(l) = &st.live {
                notify(Step::Recovered(format!(
                    "no state for {} {}: taking the running {} colour as live",
                    o.app, o.env, l.colour
                )));
            }
        }
    }
    if let Some(sw) = st.switching.take() {
        fresh = false;
        let ok = wait_healthy(
            &Options {
                health_timeout: Duration::from_secs(2),
                ..o.clone()
            },
            &sw.container,
            sw.port,
        )
        .await
        .is_ok();
        if ok && switch_to(o, &sw).await.is_ok() {
            notify(Step::Recovered(format!(
                "finished the interrupted switch to {}",
                sw.colour
            )));
            let old = st.live.replace(sw.clone());
            if let Some(old) = old.filter(|old| old.container != sw.container) {
                st.previous = Some(old);
            }
        } else if let Some(live) = st.live.clone() {
            if !e.inspect(&live.container)?.is_some_and(|c| c.running) {
                e.start(&live.container)?;
            }
            switch_to(o, &live).await?;
            if sw.container != live.container {
                e.remove(&sw.container)?;
            }
            notify(Step::Recovered(format!(
                "undid the interrupted switch to {}: {} serves",
                sw.colour, live.colour
            )));
        }
        state::save(&state::path(&o.state_dir, &o.app, &o.env), st)?;
    }
    if let Some(live) = &st.live {
        if !runs(fresh, &live.container)? {
            e.start(&live.container)?;
            fresh = false;
            notify(Step::Recovered(format!(
                "restarted the live {} colour",
                live.colour
            )));
        }
    }
    if let Some(p) = &st.previous {
        let live = st.live.as_ref().map(|l| l.container.as_str());
        if Some(p.container.as_str()) != live && runs(fresh, &p.container)? {
            tokio::time::sleep(o.drain).await;
            e.stop(&p.container, STOP_GRACE_SECS)?;
            fresh = false;
            notify(Step::Stopped {
                colour: p.colour.clone(),
            });
        }
    }
    Ok(fresh.then_some(found))
}

/// Makes the engine hold the image (by config digest); pulls it through `docker
/// load` when missing. Returns the image ID to run.
async fn ensure_image(
    ctx: &Ctx,
    o: &Options,
    image_tag: &str,
    digest: Digest,
    notify: Notify<'_>,
) -> Result<String> {
    let r = Reference {
        name: o.app.clone(),
        tag: Some(image_tag.to_string()),
        digest: Some(digest),
    };
    let img = resolve(&ctx.store, &r, o.platform.as_deref()).await?;
    let id = img.config.digest.to_string();
    let image = format!("{}:{image_tag}", o.app);
    if o.engine.has_image(&id) {
        notify(Step::Present { image });
        return Ok(id);
    }
    notify(Step::Pulling { image });
    let mut child = o.engine.load()?;
    let stdin = child.stdin.take().context("engine load has no stdin")?;
    let opts = PullOptions {
        format: Format::Docker,
        tag: None,
        platform: o.platform.clone(),
        cache: o.cache.clone(),
        // Every engine version loads plain layers (Docker < 23 cannot load zstd).
        decompress: true,
        exclude: Default::default(),
        loadable: false,
        all_platforms: false,
    };
    let out = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let pulled = pull(
        &ctx.store,
        std::slice::from_ref(&r),
        out,
        &opts,
        Arc::new(Stats::default()),
        false,
    )
    .await;
    let out = match pulled {
        Ok((_, out)) => out,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    drop(out.into_inner().map_err(|e| e.into_error())?);
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{} load failed: {}", o.engine.name(), err.trim());
    }
    if !o.engine.has_image(&id) {
        bail!("{} load did not load image {id}", o.engine.name());
    }
    Ok(id)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("no free local port")?;
    Ok(l.local_addr()?.port())
}

async fn record(ctx: &Ctx, app: &str, what: What) -> (Option<String>, Option<String>) {
    let ev = Event::new(app, &ctx.actor, what, None);
    match audit::record(&ctx.store, &ev).await {
        Ok(k) => (Some(k), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    }
}

/// The deploy itself, for `deploy`, `rollback` and the agent.
async fn converge(
    ctx: &Ctx,
    o: &Options,
    image_tag: &str,
    digest: Digest,
    result: &str,
    notify: Notify<'_>,
) -> Result<Outcome> {
    let start = Instant::now();
    let sp = state::path(&o.state_dir, &o.app, &o.env);
    let _lock = state::lock(&sp)?;
    let mut st = state::load(&sp, &o.app, &o.env)?;
    let found = reconcile(o, &mut st, notify).await?;
    state::save(&sp, &st)?;
    let want = digest.to_string();
    let outcome = |result: &str, slot: &Slot, previous: Option<Slot>| Outcome {
        app: o.app.clone(),
        env: o.env.clone(),
        result: result.into(),
        colour: slot.colour.clone(),
        digest: slot.digest.clone(),
        image_tag: slot.image_tag.clone(),
        port: slot.port,
        previous,
        duration_secs: start.elapsed().as_secs_f64(),
        event: None,
        event_error: None,
    };
    if let Some(live) = st.live.clone().filter(|l| l.digest == want) {
        st.last = Some(LastDeploy {
            result: "unchanged".into(),
            digest: want,
            at: now(),
            duration_secs: start.elapsed().as_secs_f64(),
            message: None,
        });
        state::save(&sp, &st)?;
        return Ok(outcome("unchanged", &live, st.previous.clone()));
    }
    let colour = match &st.live {
        Some(l) if l.colour == "blue" => "green",
        _ => "blue",
    };
    let name = container_name(&o.app, &o.env, colour);
    let idle = match found {
        Some(found) => found.into_iter().find(|c| c.name == name),
        None => o.engine.inspect(&name)?,
    };
    let kept = idle.and_then(|c| {
        let s = slot_of(&c, now())?;
        (s.digest == want).then_some((c, s))
    });
    let port = match kept {
        // The kept colour holds this very image (a rollback, or a deploy that died
        // before its switch): start it again instead of a new container.
        Some((c, s)) => {
            if !c.running {
                o.engine.start(&name)?;
            }
            notify(Step::Reusing {
                colour: colour.into(),
                port: s.port,
            });
            s.port
        }
        None => {
            o.engine.remove(&name)?;
            let id = ensure_image(ctx, o, image_tag, digest, notify).await?;
            pause_at("pulled", notify).await;
            let port = free_port()?;
            o.engine.run_container(&RunSpec {
                name: &name,
                image: &id,
                host_port: port,
                container_port: o.container_port,
                labels: vec![
                    (engine::LABEL_DEPLOY, deploy_label(&o.app, &o.env)),
                    (engine::LABEL_COLOUR, colour.into()),
                    (engine::LABEL_DIGEST, want.clone()),
                    (engine::LABEL_IMAGE_TAG, image_tag.into()),
                    (engine::LABEL_PORT, port.to_string()),
                ],
                extra: &o.run_args,
            })?;
            notify(Step::Starting {
                colour: colour.into(),
                port,
            });
            port
        }
    };
    pause_at("started", notify).await;
    let slot = Slot {
        colour: colour.into(),
        container: name.clone(),
        digest: want.clone(),
        image_tag: image_tag.into(),
        port,
        since: now(),
    };
    let target = |secs: f64| DeployTarget {
        env: o.env.clone(),
        host: audit::hostname(),
        image: format!("{}:{image_tag}", o.app),
        image_tag: image_tag.into(),
        digest,
        colour: colour.into(),
        duration_secs: secs,
    };
    let previous = st.live.as_ref().and_then(|l| {
        Some(DeployPrevious {
            digest: l.digest.parse().ok()?,
            colour: l.colour.clone(),
        })
    });
    let healthy = match wait_healthy(o, &name, port).await {
        Ok(a) => Ok(a),
        Err(why) => Err(anyhow!(why)),
    };
    let switched = match healthy {
        Ok(a) => {
            notify(Step::Healthy {
                colour: colour.into(),
                answer: health::describe(&Ok(a)),
            });
            pause_at("healthy", notify).await;
            st.switching = Some(slot.clone());
            state::save(&sp, &st)?;
            pause_at("switching", notify).await;
            match switch_to(o, &slot).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Traffic goes back where it was before anything is removed.
                    if let Some(live) = &st.live {
                        switch_to(o, live).await.with_context(|| {
                            format!("{e:#}; switching back to {} failed too", live.colour)
                        })?;
                    }
                    st.switching = None;
                    state::save(&sp, &st)?;
                    Err(e)
                }
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = switched {
        o.engine.remove(&name)?;
        let mut msg = format!("{e:#}");
        if msg.len() > MAX_ERROR {
            let mut end = MAX_ERROR - 3;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg.truncate(end);
            msg.push_str("...");
        }
        let secs = start.elapsed().as_secs_f64();
        st.last = Some(LastDeploy {
            result: "failed".into(),
            digest: want,
            at: now(),
            duration_secs: secs,
            message: Some(msg.clone()),
        });
        state::save(&sp, &st)?;
        let what = What::DeployFailed {
            target: target(secs),
            previous,
            error: msg,
        };
        let (_, ev_err) = record(ctx, &o.app, what).await;
        let serving = match &st.live {
            Some(l) => format!("{} ({}) still serves", l.colour, l.image_tag),
            None => "nothing was serving".into(),
        };
        let also = ev_err
            .map(|e| format!(" (the deploy-failed event was not recorded: {e})"))
            .unwrap_or_default();
        bail!(
            "deploy of {}:{image_tag} to {} failed, {colour} removed, {serving}: {e:#}{also}",
            o.app,
            o.env
        );
    }
    notify(Step::Switched {
        colour: colour.into(),
        port,
    });
    pause_at("switched", notify).await;
    let old = st.live.replace(slot.clone());
    st.switching = None;
    if old.is_some() {
        st.previous = old.clone();
    }
    let secs = start.elapsed().as_secs_f64();
    st.last = Some(LastDeploy {
        result: result.into(),
        digest: want.clone(),
        at: now(),
        duration_secs: secs,
        message: None,
    });
    state::save(&sp, &st)?;
    pause_at("drain", notify).await;
    if let Some(old) = &old {
        tokio::time::sleep(o.drain).await;
        o.engine.stop(&old.container, STOP_GRACE_SECS)?;
        notify(Step::Stopped {
            colour: old.colour.clone(),
        });
    }
    let secs = start.elapsed().as_secs_f64();
    let (event, event_error) = record(
        ctx,
        &o.app,
        What::Deploy {
            target: target(secs),
            previous,
        },
    )
    .await;
    let mut out = outcome(result, &slot, old);
    out.duration_secs = secs;
    out.event = event;
    out.event_error = event_error;
    Ok(out)
}
