//! What each command does: open the store, run the library operation, render.

use crate::cli::{
    BuildArgs, Command, CopyArgs, HistoryArgs, PromoteArgs, PullArgs, PushArgs, StampArgs,
};
use crate::lifecycle;
use crate::render;
use crate::settings::Settings;
use anyhow::{bail, Context, Result};
use s3dock::archive::Writeback;
use s3dock::model::reference::Reference;
use s3dock::registry::Registry;
use s3dock::release::access::store_name;
use s3dock::release::audit::{parse_since, EventKind};
use s3dock::release::builder::{self, BuildSpec};
use s3dock::release::env::{self, resolve_for_pull};
use s3dock::release::push::{check_push_target, record_push};
use s3dock::release::records::{app_and_tag, app_name};
use s3dock::release::{git, list, tag, Ctx};
use s3dock::transfer::delta::Exclusions;
use s3dock::transfer::pull::{pull, PullOptions};
use s3dock::transfer::push::{push, PushOptions};
use s3dock::transfer::stats::{human_bytes, Stats};
use std::io::{IsTerminal, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

async fn open(s: &Settings) -> Result<Registry> {
    Registry::open(&s.store_config(None)?).await
}

/// The store, for a command that moves tags or records: also asks the server whether
/// it honours conditional writes (said once on stderr, and in `--json`, when not).
async fn open_for_update(s: &Settings, store_url: Option<String>) -> Result<Registry> {
    let store = Registry::open(&s.store_config(store_url)?).await?;
    render::conditional_writes(s3dock::registry::cas::probe(&store).await);
    Ok(store)
}

/// A context for operations that write: the store and the configured actor.
pub(crate) async fn writer(s: &Settings) -> Result<Ctx> {
    Ok(Ctx::new(open_for_update(s, None).await?, s.actor.value.as_deref()).await)
}

pub async fn run(s: &Settings, command: Command) -> Result<()> {
    match command {
        Command::Push(a) => run_push(s, a).await,
        Command::Pull(a) => run_pull(s, a).await,
        Command::Copy(a) => run_copy(s, a).await,
        Command::Cleanup {
            older_than,
            dry_run,
            ..
        } => {
            let store = open(s).await?;
            let r = s3dock::registry::cleanup::cleanup(&store, older_than, dry_run).await?;
            if s.json {
                println!("{}", serde_json::to_string(&r)?);
            }
            let verb = if dry_run { "would remove" } else { "removed" };
            render::say(
                s,
                format!(
                    "{verb} {} temporary object(s) ({}) and {} incomplete upload(s)",
                    r.temp_objects,
                    human_bytes(r.temp_bytes),
                    r.incomplete_uploads
                ),
            );
            Ok(())
        }
        Command::Tags { name, .. } => {
            let (store_url, name) = split_store_ref(s, &name)?;
            let store = Registry::open(&s.store_config(store_url)?).await?;
            let r = Reference::parse(&name)?;
            let tags = store.tags(&r.name).await?;
            if s.json {
                println!("{}", serde_json::json!({"name": r.name, "tags": tags}));
            } else {
                for t in tags {
                    println!("{}", s3dock::model::text::printable(&t));
                }
            }
            Ok(())
        }
        Command::Build(a) => run_build(s, a).await,
        Command::Stamp(a) => run_stamp(s, a),
        Command::Tag(a) => {
            let ctx = writer(s).await?;
            render::tagged(s, &tag::tag(&ctx, &a.image, &a.version, a.force).await?);
            Ok(())
        }
        Command::Promote(a) => run_promote(s, a).await,
        Command::Current(a) => {
            let store = open(s).await?;
            let c = env::current(&store, &a.app, &a.env).await?;
            render::current(s, &c, a.digest)
        }
        Command::List(a) => {
            let store = open(s).await?;
            match a.app {
                Some(app) => render::listing(s, &list::list_app(&store, &app).await?),
                None => {
                    let (apps, malformed) = list::list_apps(&store).await?;
                    render::apps(s, &apps, &malformed, store_name(&store));
                }
            }
            Ok(())
        }
        Command::History(a) => run_history(s, a).await,
        Command::Rm(a) => lifecycle::run_rm(s, &a.refs, a.force).await,
        Command::Prune(a) => lifecycle::run_prune(s, a).await,
        Command::Gc(a) => {
            let opts = s3dock::lifecycle::gc::GcOptions {
                grace: a.grace,
                dry_run: a.dry_run,
            };
            lifecycle::run_gc(s, opts).await
        }
        Command::Verify(a) => lifecycle::run_verify(s, a).await,
        Command::Deploy(a) => crate::deploy::run_deploy(s, a).await,
        Command::Rollback(a) => crate::deploy::run_rollback(s, a).await,
        Command::Agent(a) => crate::deploy::run_agent(s, a).await,
        Command::Status(a) => crate::deploy::run_status(s, a),
        Command::Config { .. } | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("run by main: they need no resolved settings")
        }
    }
}

fn run_stamp(s: &Settings, a: StampArgs) -> Result<()> {
    if let Some(app) = &a.app {
        app_name(app)?;
    }
    let tag = git::head(&a.context, a.allow_dirty)?.stamp()?;
    render::stamp(s, a.app.as_deref(), &tag);
    Ok(())
}

async fn run_build(s: &Settings, a: BuildArgs) -> Result<()> {
    app_name(&a.app)?;
    let builder = s.builder.value;
    let commit = git::head(&a.context, false)?;
    let tag = commit.stamp()?;
    let reference = format!("{}:{tag}", a.app);
    // Open the store first, so a bad store fails before a long build.
    let ctx = if a.push {
        let ctx = writer(s).await?;
        check_push_target(&ctx.store, &Reference::parse(&reference)?, false).await?;
        Some(ctx)
    } else {
        None
    };
    render::say(s, format!("building {reference} with {}", builder.bin()));
    let spec = BuildSpec {
        builder,
        context: a.context.clone(),
        dockerfile: a.dockerfile.clone(),
        platform: a.platform.clone(),
        build_args: a.build_args.clone(),
    };
    builder::build(&spec, &reference, &commit)?;
    let mut summary = serde_json::json!({"reference": reference, "commit": commit.hash});
    if let Some(ctx) = ctx {
        let opts = PushOptions {
            compression: s.compression.value,
            level: a.level,
            platform: a.platform.clone(),
            use_index: true,
            resume: true,
            all_platforms: false,
        };
        let recorded = builder::save_and_push(
            &ctx,
            builder,
            (&a.app, &tag),
            opts,
            &commit,
            s.show_progress(),
        )
        .await?;
        render::report_push(s, &recorded);
        summary["pushed"] = serde_json::to_value(&recorded)?;
        summary["store"] = store_name(&ctx.store).into();
    }
    if s.json {
        println!("{summary}");
    } else {
        println!("{reference}");
    }
    Ok(())
}

async fn run_promote(s: &Settings, a: PromoteArgs) -> Result<()> {
    let ctx = writer(s).await?;
    let (app, name, env) = match a.args.as_slice() {
        [image, env] => {
            let (app, tag) = app_and_tag(image, "with two arguments, the first")?;
            (app, tag, env.clone())
        }
        [app, name, env] => (app.clone(), name.clone(), env.clone()),
        _ => bail!("usage: s3dock promote APP:TAG ENV, or s3dock promote APP TAG ENV"),
    };
    render::promoted(s, &env::promote(&ctx, &app, &name, &env).await?);
    Ok(())
}

async fn run_history(s: &Settings, a: HistoryArgs) -> Result<()> {
    let store = open(s).await?;
    app_name(&a.app)?;
    let since = a.since.as_deref().map(parse_since).transpose()?;
    let event = a
        .event
        .as_deref()
        .map(str::parse::<EventKind>)
        .transpose()?;
    let h = list::history(&store, &a.app, since.as_ref(), event, a.limit).await?;
    render::history(s, &h)
}

/// Splits `s3://bucket/name:tag` into a store and a reference.
fn split_store_ref(s: &Settings, r: &str) -> Result<(Option<String>, String)> {
    if let Some(rest) = r.strip_prefix("s3://") {
        let (bucket, name) = rest
            .split_once('/')
            .context("s3:// references need a name: s3://bucket/name:tag")?;
        if s.store.source != "default" {
            bail!("the reference {r:?} names a bucket; drop --store (or S3DOCK_STORE) or the s3:// prefix");
        }
        return Ok((Some(format!("s3://{bucket}")), name.to_string()));
    }
    Ok((None, r.to_string()))
}

async fn run_push(s: &Settings, a: PushArgs) -> Result<()> {
    let (store_url, reference) = match &a.reference {
        Some(r) => {
            let (s, r) = split_store_ref(s, r)?;
            (s, Some(Reference::parse(&r)?))
        }
        None => (None, None),
    };
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = match a.input.as_deref() {
        None => stdin_input()?,
        Some(p) if p.as_os_str() == "-" => stdin_input()?,
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        }
    };
    let store = open_for_update(s, store_url).await?;
    if let Some(r) = &reference {
        check_push_target(&store, r, a.no_clobber).await?;
    } else if a.no_clobber {
        bail!("--no-clobber needs the target reference: s3dock push --no-clobber myapp:TAG");
    }
    let stats = Arc::new(Stats::default());
    let opts = PushOptions {
        compression: s.compression.value,
        level: a.level,
        platform: a.platform,
        use_index: !a.no_index,
        resume: !a.no_resume,
        all_platforms: a.all_platforms,
    };
    let start = Instant::now();
    let pushed = push(
        &store,
        input,
        size,
        reference,
        opts,
        stats.clone(),
        s.show_progress(),
    )
    .await?;
    let ctx = Ctx::new(store.clone(), s.actor.value.as_deref()).await;
    let recorded = record_push(&ctx, &pushed, None).await?;
    let secs = start.elapsed().as_secs_f64();
    let read = stats.bytes_read.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "images": pushed,
        "recorded": recorded,
        "layers": stats.layers.load(Ordering::Relaxed),
        "bytes_read": read,
        "bytes_uploaded": stats.bytes_uploaded.load(Ordering::Relaxed),
        "bytes_resumed": stats.bytes_resumed.load(Ordering::Relaxed),
        "blobs_skipped": stats.blobs_skipped.load(Ordering::Relaxed),
        "compression": s.compression.value.name(),
        // Per layer compressed with zstd: [lowest, last, highest] level (they differ with auto).
        "zstd_levels": *stats.zstd_levels.lock().expect("stats lock"),
        "seconds": secs,
        "store": store_name(&store),
    });
    if s.json {
        render::json_result(summary.clone());
    }
    if !s.quiet {
        for p in &pushed {
            eprintln!("pushed {} {}", p.reference, p.manifest_digest);
        }
        render::report_push(s, &recorded);
        let resumed = stats.bytes_resumed.load(Ordering::Relaxed);
        eprintln!(
            "{} layers, read {}, uploaded {}{}, {} blobs skipped, {:.1}s, {}/s",
            summary["layers"],
            human_bytes(read),
            human_bytes(stats.bytes_uploaded.load(Ordering::Relaxed)),
            if resumed > 0 {
                format!(" (and {} resumed)", human_bytes(resumed))
            } else {
                String::new()
            },
            summary["blobs_skipped"],
            secs,
            human_bytes((read as f64 / secs.max(1e-3)) as u64)
        );
    }
    Ok(())
}

fn stdin_input() -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if std::io::stdin().is_terminal() {
        bail!(
            "no archive on stdin: pipe one in (docker save IMAGE | s3dock push ...) or use -i FILE"
        );
    }
    // A pipe hands over 64 KiB per read by default; a 1 MiB pipe buffer cuts the
    // syscalls and context switches per GiB sixteenfold. Best effort: not a pipe is fine.
    unsafe {
        libc::fcntl(0, libc::F_SETPIPE_SZ, 1 << 20);
    }
    Ok((Box::new(std::io::stdin()), None))
}

/// A `--exclude-from` list is a few digests per image; more than this is not one.
const MAX_EXCLUDE_LIST: u64 = 64 << 20;

async fn run_pull(s: &Settings, a: PullArgs) -> Result<()> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an image archive to a terminal: pipe it (| docker load) or use -o FILE");
    }
    if a.loadable && a.exclude.is_empty() && a.exclude_from.is_empty() {
        bail!("--loadable goes with --exclude or --exclude-from (any other archive is loadable)");
    }
    // References may name the store (s3://bucket/name), all the same one.
    let mut store_url = None;
    let mut names = Vec::with_capacity(a.references.len());
    for (i, r) in a.references.iter().enumerate() {
        let (url, name) = split_store_ref(s, r)?;
        if i > 0 && url != store_url {
            bail!("the references name different stores: pull from one store at a time");
        }
        store_url = url;
        names.push(name);
    }
    let store = Registry::open(&s.store_config(store_url)?).await?;
    // `pull APP NAME`: two plain names are an app and its environment, version or tag.
    let app_and_name = a.env.is_none()
        && names.len() == 2
        && Reference::parse(&names[0]).is_ok_and(|r| r.tag.is_none() && r.digest.is_none())
        && !names[1].contains([':', '@', '/']);
    let (refs, bundle) = match (&a.env, names.as_slice()) {
        (Some(env), []) => {
            let (refs, malformed) = env::env_everywhere(&store, env).await?;
            render::skipped(&malformed);
            (refs, true)
        }
        (Some(env), apps) => {
            let mut refs = Vec::with_capacity(apps.len());
            for app in apps {
                refs.push(env::env_reference(&store, app, env).await?);
            }
            (refs, apps.len() > 1)
        }
        (None, []) => bail!(
            "name an image to pull (s3dock pull myapp:1.4), or an environment of every app (s3dock pull --env production)"
        ),
        (None, [app, name]) if app_and_name => {
            (vec![resolve_for_pull(&store, &Reference::parse(app)?.name, name).await?], false)
        }
        (None, names) => (
            names
                .iter()
                .map(|n| Reference::parse(n))
                .collect::<Result<Vec<_>, _>>()?,
            names.len() > 1,
        ),
    };
    let mut exclude = Exclusions::default();
    for e in &a.exclude {
        exclude
            .add_image(
                &store,
                &Reference::parse(e)?,
                a.platform.as_deref(),
                a.all_platforms,
            )
            .await?;
    }
    for path in &a.exclude_from {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut text = String::new();
        f.take(MAX_EXCLUDE_LIST)
            .read_to_string(&mut text)
            .with_context(|| {
                format!(
                    "cannot read {} (a list of digests, one a line)",
                    path.display()
                )
            })?;
        exclude.add_list(&text, &path.display().to_string())?;
    }
    let cache = a.cache.or_else(|| s.cache.value.as_ref().map(Into::into));
    if a.loadable && cache.is_none() {
        bail!("--loadable takes the excluded layers from the cache: name it with --cache DIR (or S3DOCK_CACHE)");
    }
    let opts = PullOptions {
        format: a.format,
        tag: a.tag.as_deref().map(Reference::parse).transpose()?,
        platform: a.platform,
        cache,
        decompress: a.decompress,
        exclude,
        loadable: a.loadable,
        all_platforms: a.all_platforms,
    };
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let progress = s.show_progress();
    let report = match &a.output {
        // A device or FIFO (`-o /dev/null`, a named pipe) is written in place: renaming
        // a temp file over it would replace it.
        Some(path) if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, f);
            pull(&store, &refs, out, &opts, stats.clone(), progress)
                .await?
                .0
        }
        Some(path) => {
            // Written beside the target and renamed, so FILE is complete or absent.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            // Mode as `cp` gives it: an existing FILE keeps its own, a new one 0666 less
            // the umask (a temp file alone would be 0600).
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions())
                .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o666));
            let tmp = tempfile::Builder::new()
                .prefix(".s3dock-pull-")
                .permissions(mode)
                .tempfile_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, Writeback::new(tmp));
            let (report, out) = pull(&store, &refs, out, &opts, stats.clone(), progress).await?;
            let tmp = out.into_inner().map_err(|e| e.into_error())?.into_inner();
            tmp.as_file().sync_all()?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            report
        }
        None => {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            pull(&store, &refs, out, &opts, stats.clone(), progress)
                .await?
                .0
        }
    };
    render::pulled(
        s,
        &report,
        bundle,
        a.output.as_deref(),
        stats.bytes_downloaded.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    )
}

async fn run_copy(s: &Settings, a: CopyArgs) -> Result<()> {
    use s3dock::transfer::copy::{copy, expand, Selection};
    let to = s.copy_target(&a)?;
    if let s3dock::store::Location::Http(url) = &to.location {
        bail!("{url} is a read-only http(s) store: copy can read from one (--store) but not write to it; give --to an s3:// URL or a directory");
    }
    let sel = if a.all {
        Selection::All
    } else {
        Selection::Refs(
            a.refs
                .iter()
                .map(|r| Reference::parse(r))
                .collect::<Result<_, _>>()?,
        )
    };
    let src = open(s).await?;
    let dst = Registry::open(&to).await?;
    if src.display == dst.display && src.layout().root_prefix() == dst.layout().root_prefix() {
        bail!(
            "--to names the source store {} itself: give another store",
            dst.display
        );
    }
    let start = Instant::now();
    let refs = expand(&src, &sel).await?;
    if !a.with_releases {
        // Without its record a copied tag would move a target environment or version
        // behind promote's and tag's back.
        for r in &refs {
            if let Some(why) = s3dock::release::push::release_pointer(&dst, r).await? {
                bail!("{why} (in {}), or copy with --with-releases", dst.display);
            }
        }
    }
    let copied = copy(&src, &dst, &refs, !a.no_resume).await?;
    let mut records = Vec::new();
    if a.with_releases {
        let mut apps: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        apps.sort();
        apps.dedup();
        for app in apps {
            records.push(s3dock::release::copy::copy_records(&src, &dst, app).await?);
        }
    }
    render::copied(
        s,
        &copied,
        &records,
        &src,
        &dst,
        start.elapsed().as_secs_f64(),
    );
    Ok(())
}
