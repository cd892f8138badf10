//! Registry-qualified names survive the round trip (issue 11): `docker save NAME | s3dock
//! push` then `s3dock pull NAME | docker load` gives back exactly the name `docker images`
//! showed, for Docker Hub names, hosts, and hosts with ports; `pull --tag` writes the name
//! as docker normalises it; a name never pushed fails with what the store holds nearby;
//! registry:2 serves a host-qualified repository under its full name.
//!
//! Docker Engine at the default socket; images built `FROM scratch` with busybox-static.

mod common;
mod interop_support;

use common::*;
use interop_support::*;

/// The five kinds of name the issue lists, unique per run and test (`t`): (typed, what
/// `docker images` shows). `docker.io/library/busybox` is shown as `busybox`.
fn names(t: &str) -> Vec<(String, String)> {
    let id = format!("{}{t}", run_id());
    [
        (format!("ghcr.io/acme{id}/web:1.2"), None),
        (format!("localhost:5000/team{id}/api:1"), None),
        (format!("registry.example.com:8443/a{id}/b/c:2"), None),
        (
            format!("docker.io/library/busybox:x{id}"),
            Some(format!("busybox:x{id}")),
        ),
        (format!("busybox:y{id}"), None),
    ]
    .into_iter()
    .map(|(typed, shown)| {
        let shown = shown.unwrap_or_else(|| typed.clone());
        (typed, shown)
    })
    .collect()
}

/// What `docker images` shows for `r` (`REPOSITORY:TAG`), one line per tag.
fn docker_images(r: &str) -> Vec<String> {
    let out = check(tool("docker").args(["images", "--format", "{{.Repository}}:{{.Tag}}", r]));
    stdout(&out).lines().map(String::from).collect()
}

/// A small runnable image, tagged with every name of [`names`]; returns what it prints.
fn tagged_image(images: &DockerImages, t: &str) -> (ImageInfo, String) {
    let base = format!("nm{}/base:{t}", run_id());
    let ctx = BuildContext::new();
    let msg = format!("names {} {t}\n", run_id());
    ctx.file("rootfs/id.txt", msg.as_bytes())
        .file("msg.txt", msg.as_bytes());
    let info = ctx.build(
        images,
        &base,
        "FROM scratch\nCOPY rootfs/ /\nCOPY msg.txt /msg.txt\nCMD [\"/bin/busybox\", \"cat\", \"/msg.txt\"]\n",
    );
    for (typed, _) in names(t) {
        images.add(&typed);
        check(tool("docker").args(["tag", &base, &typed]));
    }
    (info, msg)
}

fn round_trip_every_name(store: TestStore) {
    let images = DockerImages::new();
    let t = store.kind;
    let (before, msg) = tagged_image(&images, t);
    for (typed, shown) in names(t) {
        assert_eq!(docker_images(&shown), vec![shown.clone()], "{typed}");
        // No reference argument: the name comes from the archive.
        let pushed = docker_save_push(&store, &[&typed], &[]);
        assert_eq!(
            pushed["images"][0]["reference"], shown,
            "[{}] {pushed}",
            store.kind
        );
        docker_rmi(&typed);
        assert!(docker_images(&shown).is_empty());
        pull_docker_load_ok(&store, &[&typed], &shown);
        assert_eq!(
            docker_images(&shown),
            vec![shown.clone()],
            "[{}]",
            store.kind
        );
        assert_eq!(docker_inspect(&typed).as_ref(), Some(&before));
        assert_eq!(
            docker_run(&typed, &[]),
            msg,
            "[{}] docker run {typed}",
            store.kind
        );
        // The familiar name pulls the same image as the name it was typed as.
        let by_shown = summarize_archive(&store.pull(&[&shown]));
        assert_eq!(by_shown[0].repo_tags, vec![shown.clone()]);
    }
    // Where each landed in the store: the repository is the familiar name, a port written `__`.
    let id = format!("{}{t}", run_id());
    let tags = store.visible_tags();
    for want in [
        format!("ghcr.io/acme{id}/web:1.2"),
        format!("localhost__5000/team{id}/api:1"),
        format!("registry.example.com__8443/a{id}/b/c:2"),
        format!("busybox:x{id}"),
        format!("busybox:y{id}"),
    ] {
        assert!(
            tags.contains(&want),
            "[{}] {want} not in {tags:?}",
            store.kind
        );
    }
}

#[test]
fn docker_round_trip_keeps_registry_hosts_dir() {
    if !need_docker() || !need_busybox() {
        return;
    }
    round_trip_every_name(TestStore::local());
}

#[test]
fn docker_round_trip_keeps_registry_hosts_moto() {
    if !need_docker() || !need_busybox() {
        return;
    }
    if let Some(store) = TestStore::s3("moto") {
        round_trip_every_name(store);
    }
}

/// `pull --tag X` writes X as docker normalises it; a multi-tag archive keeps every tag.
#[test]
fn docker_pull_tag_and_multi_tag_archive() {
    if !need_docker() || !need_busybox() {
        return;
    }
    let store = TestStore::local();
    let images = DockerImages::new();
    let (before, msg) = tagged_image(&images, "tag");
    let all = names("tag");
    let typed: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    let pushed = docker_save_push(&store, &typed, &[]);
    let mut refs: Vec<String> = pushed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["config_digest"], before.id.as_str());
            i["reference"].as_str().unwrap().to_string()
        })
        .collect();
    refs.sort();
    let mut shown: Vec<String> = all.iter().map(|(_, s)| s.clone()).collect();
    shown.sort();
    assert_eq!(refs, shown, "every tag of the archive is pushed");

    let id = run_id();
    for (tag, loaded) in [
        (
            format!("docker.io/library/busybox:z{id}"),
            format!("busybox:z{id}"),
        ),
        (
            format!("index.docker.io/library/busybox:w{id}"),
            format!("busybox:w{id}"),
        ),
        (format!("docker.io/org{id}/app:1"), format!("org{id}/app:1")),
        (
            format!("ghcr.io/org{id}/app:1"),
            format!("ghcr.io/org{id}/app:1"),
        ),
        (
            format!("localhost:5000/org{id}/app:1"),
            format!("localhost:5000/org{id}/app:1"),
        ),
    ] {
        images.add(&loaded);
        let archive = store.pull(&[&all[0].0, "--tag", &tag]);
        assert_eq!(
            summarize_archive(&archive)[0].repo_tags,
            vec![loaded.clone()]
        );
        pull_docker_load_ok(&store, &[&all[0].0, "--tag", &tag], &loaded);
        assert_eq!(docker_images(&loaded), vec![loaded.clone()]);
        assert_eq!(docker_run(&loaded, &[]), msg);
    }
}

/// A name that was never pushed fails naming what is nearby, and never serves another
/// repository. No Docker needed; not on s3s-fs, whose key length limit these names pass.
#[test]
fn pull_of_an_unknown_name_suggests_what_exists() {
    let id = run_id();
    for store in std::iter::once(TestStore::local()).chain(TestStore::s3("moto")) {
        let web = format!("ghcr.io/acme{id}/web");
        store.push_json(
            &[
                "-i",
                fixture("docker-legacy.tar").to_str().unwrap(),
                &format!("{web}:1.2"),
            ],
            None,
        );
        store.push_json(
            &[
                "-i",
                fixture("docker25-tiny.tar").to_str().unwrap(),
                &format!("localhost:5000/other{id}/db:7"),
            ],
            None,
        );
        let want = format!("did you mean {web}:1.2?");
        for (asked, suggestion) in [
            (format!("{web}:1.3"), want.clone()),
            (format!("localhost:5000/acme{id}/web:1.2"), want.clone()),
            (format!("acme{id}/web:1.2"), want.clone()),
            (format!("docker.io/acme{id}/web:1.2"), want.clone()),
            (format!("ghcr.io/acme{id}/wbe:1.2"), want.clone()),
            (
                format!("localhost:5000/other{id}/db:8"),
                format!("did you mean localhost:5000/other{id}/db:7?"),
            ),
            (
                format!("localhost:5001/other{id}/db:7"),
                format!("did you mean localhost:5000/other{id}/db:7?"),
            ),
        ] {
            let out = store.run(&["pull", "-q", &asked, "-o", "/dev/null"], None);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "[{}] pull {asked} succeeded",
                store.kind
            );
            assert!(
                err.contains(&suggestion),
                "[{}] pull {asked}: {err}",
                store.kind
            );
            assert_eq!(err.lines().count(), 1, "[{}] {err}", store.kind);
        }
        let err = store.fails(
            &[
                "pull",
                "-q",
                &format!("zzzzzzzzzzzzzzzz{id}:1"),
                "-o",
                "/dev/null",
            ],
            None,
        );
        assert!(
            err.contains("not found") && !err.contains("did you mean"),
            "{err}"
        );
        // The store as it was: only the two pushed tags.
        assert_eq!(
            store.visible_tags(),
            vec![
                format!("ghcr.io/acme{id}/web:1.2"),
                format!("localhost__5000/other{id}/db:7"),
            ]
        );
    }
}

/// Upper-case registry hosts (legal for docker) are refused with a clear error, nothing stored.
#[test]
fn upper_case_hosts_are_refused() {
    let store = TestStore::local();
    for r in ["GHCR.io/acme/web:1", "Registry:5000/a:1"] {
        let err = store.fails(
            &[
                "push",
                "-i",
                fixture("docker-legacy.tar").to_str().unwrap(),
                r,
            ],
            None,
        );
        assert!(err.contains("upper-case"), "{err}");
    }
    assert!(store.visible_tags().is_empty());
}

/// registry:2 on the store serves `ghcr.io/acme/web:1.2` as `HOST:PORT/ghcr.io/acme/web:1.2`
/// to skopeo and to `docker pull`.
#[test]
fn registry_serves_a_host_qualified_repository() {
    if !need_docker() || !need_busybox() || !need_registry() || !need_skopeo() {
        return;
    }
    let store = TestStore::local();
    let images = DockerImages::new();
    let (before, msg) = tagged_image(&images, "reg");
    let id = format!("{}reg", run_id());
    let web = format!("ghcr.io/acme{id}/web:1.2");
    let port = format!("localhost:5000/team{id}/api:1");
    docker_save_push(&store, &[&web, &port], &[]);
    let reg = Registry::fs(store.dir.as_ref().unwrap().path());
    let repo = web.split_once(':').unwrap().0;
    assert_eq!(reg.tags(repo), vec!["1.2"]);
    assert!(
        reg.catalog().iter().any(|r| r == repo),
        "{:?}",
        reg.catalog()
    );
    assert_eq!(skopeo_config_digest(&reg.docker_ref(&web)), before.id);
    let pulled = format!("{}/{web}", reg.addr);
    images.add(&pulled);
    docker_pull_same(&pulled, &before, &msg);
    // The port form is a valid repository name too.
    let stored = format!("localhost__5000/team{id}/api:1");
    assert_eq!(skopeo_config_digest(&reg.docker_ref(&stored)), before.id);
}
