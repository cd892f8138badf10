//! `deploy`, `rollback`, `agent` and `status`: the host flags become
//! [`s3dock::deploy::Options`], progress goes to stderr, results to stdout with `--json`.

use crate::cli::{AgentArgs, DeployArgs, HostArgs, StatusArgs, SwitchKind};
use crate::render;
use crate::settings::Settings;
use anyhow::{bail, Result};
use s3dock::deploy::engine::Engine;
use s3dock::deploy::switch::Switch;
use s3dock::deploy::{self, Options, Outcome, Status, Step};
use s3dock::model::text::printable;
use s3dock::release::records::{check_app_name, check_env_name};
use s3dock::release::tag::short_digest;
use s3dock::release::Ctx;

fn options(app: &str, env: &str, h: &HostArgs) -> Result<Options> {
    check_app_name(app)?;
    check_env_name(env)?;
    let switch = match h.switch {
        SwitchKind::Nginx => {
            if h.hook.is_some() {
                bail!("--hook needs --switch hook");
            }
            Switch::Nginx {
                upstream: h.nginx_upstream.clone().unwrap_or_else(|| {
                    format!("/etc/nginx/conf.d/s3dock-{}-{env}.conf", app.replace('/', "_")).into()
                }),
                reload: h.nginx_reload.clone(),
            }
        }
        SwitchKind::Hook => match &h.hook {
            Some(c) => Switch::Hook { command: c.clone() },
            None => bail!("--switch hook needs --hook CMD (run with S3DOCK_ADDR set to the new colour's 127.0.0.1:PORT)"),
        },
    };
    Ok(Options {
        app: app.into(),
        env: env.into(),
        engine: Engine::new(&h.engine),
        state_dir: h.state_dir.clone(),
        public_port: h.port,
        container_port: h.container_port,
        health_path: h.health.clone(),
        health_timeout: h.health_timeout,
        drain: h.drain,
        switch,
        run_args: h.run_args.clone(),
        cache: h.cache.clone(),
        platform: h.platform.clone(),
    })
}

async fn ctx(s: &Settings) -> Result<Ctx> {
    crate::commands::writer(s).await
}

/// Progress lines on stderr (also without a terminal: a deploy is worth a log).
fn progress(s: &Settings) -> impl Fn(Step) + Send + Sync + '_ {
    move |step| {
        // A pause is for tests that kill the deploy there: always said.
        if let Step::Paused(at) = step {
            eprintln!("s3dock: deploy paused at {at} (S3DOCK_DEPLOY_PAUSE_AT)");
            return;
        }
        let msg = match step {
            Step::Recovered(m) => format!("recovered: {m}"),
            Step::Pulling { image } => format!("pulling {image} into the engine"),
            Step::Present { image } => format!("{image} is already in the engine"),
            Step::Starting { colour, port } => format!("started {colour} on 127.0.0.1:{port}"),
            Step::Reusing { colour, port } => {
                format!("{colour} already holds this image: starting it on 127.0.0.1:{port}")
            }
            Step::Healthy { colour, answer } => format!("{colour} is healthy ({answer})"),
            Step::Switched { colour, port } => {
                format!("traffic switched to {colour} (127.0.0.1:{port})")
            }
            Step::Stopped { colour } => format!("{colour} stopped (kept for rollback)"),
            Step::Agent(m) => format!("agent: {m}"),
            Step::Paused(_) => unreachable!(),
        };
        render::say(s, printable(&msg));
    }
}

fn outcome(s: &Settings, o: &Outcome) -> Result<()> {
    if s.json {
        render::json_result(serde_json::to_value(o)?);
    }
    let what = format!(
        "{}:{} ({})",
        o.app,
        o.image_tag,
        short_digest_str(&o.digest)
    );
    let msg = match o.result.as_str() {
        "unchanged" => format!(
            "{what} is already live in {} ({} on 127.0.0.1:{}): nothing to do",
            o.env, o.colour, o.port
        ),
        r => format!(
            "{} {what} to {}: {} serves on 127.0.0.1:{} ({:.1}s){}",
            if r == "rolled-back" {
                "rolled back"
            } else {
                "deployed"
            },
            o.env,
            o.colour,
            o.port,
            o.duration_secs,
            o.previous
                .as_ref()
                .map(|p| format!(", {} kept stopped for rollback", p.colour))
                .unwrap_or_default()
        ),
    };
    render::say(s, printable(&msg));
    if let Some(e) = &o.event_error {
        tracing::warn!("the deploy event was not recorded in the store: {e}");
    }
    Ok(())
}

fn short_digest_str(d: &str) -> String {
    d.parse()
        .map_or_else(|_| d.to_string(), |d| short_digest(&d))
}

pub async fn run_deploy(s: &Settings, a: DeployArgs) -> Result<()> {
    let o = options(&a.app, &a.env, &a.host)?;
    let ctx = ctx(s).await?;
    let out = deploy::deploy(&ctx, &o, &progress(s)).await?;
    outcome(s, &out)
}

pub async fn run_rollback(s: &Settings, a: DeployArgs) -> Result<()> {
    let o = options(&a.app, &a.env, &a.host)?;
    let ctx = ctx(s).await?;
    let (rb, out) = deploy::rollback(&ctx, &o, &progress(s)).await?;
    render::say(
        s,
        printable(&format!(
            "{} {}: generation {} ({}) → generation {} ({})",
            a.app,
            a.env,
            rb.from.generation,
            rb.from.target.name,
            rb.now.generation,
            rb.now.target.name
        )),
    );
    outcome(s, &out)
}

pub async fn run_agent(s: &Settings, a: AgentArgs) -> Result<()> {
    let o = options(&a.app, &a.env, &a.host)?;
    let ctx = ctx(s).await?;
    render::say(
        s,
        printable(&format!(
            "agent: watching {} {} every {}s",
            a.app,
            a.env,
            a.interval.as_secs()
        )),
    );
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    deploy::agent::run(&ctx, &o, a.interval, stop, &progress(s)).await?;
    render::say(s, "agent: stopped");
    Ok(())
}

pub fn run_status(s: &Settings, a: StatusArgs) -> Result<()> {
    let st = deploy::status(&Engine::new(&a.engine), &a.state_dir, &a.app, &a.env)?;
    if s.json {
        println!("{}", serde_json::to_string(&st)?);
        return Ok(());
    }
    print_status(&st);
    Ok(())
}

fn print_status(st: &Status) {
    let s = &st.state;
    let mut lines = vec![format!("{} {}", s.app, s.env)];
    match &s.live {
        Some(l) => lines.push(format!(
            "  live:     {} {}:{} ({}) on 127.0.0.1:{} since {}{}",
            l.colour,
            s.app,
            l.image_tag,
            short_digest_str(&l.digest),
            l.port,
            l.since,
            if st.live_running {
                ""
            } else {
                " — NOT RUNNING"
            }
        )),
        None => lines.push("  live:     nothing deployed on this host".into()),
    }
    if let Some(p) = &s.previous {
        lines.push(format!(
            "  previous: {} {}:{} ({}){}",
            p.colour,
            s.app,
            p.image_tag,
            short_digest_str(&p.digest),
            if st.previous_kept {
                ", kept stopped for rollback"
            } else {
                ", removed"
            }
        ));
    }
    if let Some(l) = &s.last {
        lines.push(format!(
            "  last:     {} {} at {} ({:.1}s){}",
            l.result,
            short_digest_str(&l.digest),
            l.at,
            l.duration_secs,
            l.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    for l in lines {
        println!("{}", printable(&l));
    }
}
