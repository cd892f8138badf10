//! Every class of store failure reads as one short line that says what failed and
//! what to do: no credentials, unknown credentials, access denied (moto with IAM
//! enforcement), no such bucket, wrong region, unreachable endpoint, and an input
//! that is not an archive. The SDK's own detail appears only with `-v`.

mod common;

use common::iam::IamMoto;
use common::{fixture, python, require, venv_python};
use serde_json::json;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

fn s3dock() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3dock"));
    // Nothing from the machine's AWS setup, and no instance-metadata probes.
    c.env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3DOCK_CONFIG", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("S3DOCK_STORE")
        .env_remove("S3DOCK_ENDPOINT")
        .env_remove("S3DOCK_REGION")
        .stdin(Stdio::null());
    c
}

fn moto() -> Option<String> {
    let ep = std::env::var("S3DOCK_TEST_MOTO").ok();
    require("S3 server moto (S3DOCK_TEST_MOTO)", ep.is_some()).then(|| ep.unwrap())
}

fn s3s() -> Option<String> {
    let ep = std::env::var("S3DOCK_TEST_S3S").ok();
    require("S3 server s3s (S3DOCK_TEST_S3S)", ep.is_some()).then(|| ep.unwrap())
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one-line error rules; returns the line.
fn one_error_line(o: &Output, what: &str, wants: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{what}: should have failed: {err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{what}: exactly one stderr line: {err}");
    let l = lines[0];
    assert!(l.starts_with("s3dock: error: "), "{what}: {l}");
    assert!(l.chars().count() <= 200, "{what}: {} chars: {l}", l.len());
    assert!(!l.contains('\x1b'), "{what}: ANSI codes: {l:?}");
    assert!(
        !l.contains('{') && !l.contains("Error {") && !l.contains("source:"),
        "{what}: looks like a Debug dump: {l}"
    );
    for w in wants {
        assert!(l.contains(w), "{what}: expected {w:?} in: {l}");
    }
    l.to_string()
}

struct Case {
    what: &'static str,
    cmd: Command,
    wants: Vec<String>,
}

#[test]
fn every_error_class_is_one_actionable_line() {
    let (Some(moto), Some(s3s)) = (moto(), s3s()) else {
        return;
    };
    let Some(iam) = IamMoto::start() else { return };
    let bucket = std::env::var("S3DOCK_TEST_BUCKET").unwrap_or_else(|_| "s3dock-test".into());
    let store = format!("s3://{bucket}/errors");
    let tiny = fixture("docker25-tiny.tar");
    let mut cases: Vec<Case> = Vec::new();
    let mut case = |what, args: &[&str], env: &[(&str, &str)], wants: &[&str]| {
        let mut cmd = s3dock();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cases.push(Case {
            what,
            cmd,
            wants: wants.iter().map(|s| s.to_string()).collect(),
        });
    };
    let (id, secret) = test_keys();
    let keys = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];

    // No credentials anywhere: which variables or profile to set.
    for ep in [&moto, &s3s] {
        case(
            "no credentials",
            &["tags", "a", "--store", &store, "--endpoint", ep],
            &[],
            &["no AWS credentials", "AWS_ACCESS_KEY_ID", "--aws-profile"],
        );
    }
    // No such bucket, on both servers.
    for ep in [&moto, &s3s] {
        case(
            "no such bucket",
            &[
                "tags",
                "a",
                "--store",
                "s3://s3dock-no-such-bucket/x",
                "--endpoint",
                ep,
            ],
            &keys,
            &["\"s3dock-no-such-bucket\" does not exist", "aws s3 mb"],
        );
    }
    // Unreachable endpoint: nothing listens there.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    case(
        "unreachable endpoint",
        &[
            "tags",
            "a",
            "--store",
            &store,
            "--endpoint",
            &closed,
            "--retries",
            "1",
        ],
        &keys,
        &["cannot reach bucket", &closed, "check --endpoint"],
    );

    // Access denied, from moto enforcing IAM: a reader may list and get, not put.
    iam.create_bucket("denied");
    let reader = iam.user(
        "reader",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetObject"],
            "Resource": ["arn:aws:s3:::denied", "arn:aws:s3:::denied/*"]}]}),
    );
    let nobody = iam.user(
        "nobody",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::elsewhere/*"}]}),
    );
    let denied_push = [
        "push",
        "app:1",
        "-i",
        tiny.to_str().unwrap(),
        "--store",
        "s3://denied/p",
        "--endpoint",
        &iam.endpoint,
    ];
    case(
        "access denied on put",
        &denied_push,
        &[
            ("AWS_ACCESS_KEY_ID", reader.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", reader.secret.as_str()),
        ],
        &["access denied", "s3:PutObject on denied/p/", "IAM policy"],
    );
    case(
        "access denied on the bucket",
        &[
            "tags",
            "a",
            "--store",
            "s3://denied/p",
            "--endpoint",
            &iam.endpoint,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", nobody.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", nobody.secret.as_str()),
        ],
        &[
            "access denied",
            "s3:ListBucket on denied:",
            "other credentials",
        ],
    );
    // A key the server does not know. HeadBucket, the first request, has no body, so
    // only the status says it: the line names the credentials as the other cause.
    case(
        "unknown access key",
        &[
            "tags",
            "a",
            "--store",
            "s3://denied/p",
            "--endpoint",
            &iam.endpoint,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00"),
            ("AWS_SECRET_ACCESS_KEY", "nope"),
        ],
        &["access denied", "other credentials"],
    );

    // Wrong region. moto serves a bucket to requests signed for any region (AWS
    // answers 301 with x-amz-bucket-region, which no local server reproduces), but
    // names the bucket's region in HeadBucket; on AWS (no --endpoint) a mismatch is an
    // error. AWS_ENDPOINT_URL sends the "AWS" requests to moto.
    python(&format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{moto}',region_name='eu-west-1',\
         aws_access_key_id='s3dock-test',aws_secret_access_key='s3dock-test-secret')\n\
         try:\n    c.create_bucket(Bucket='s3dock-eu',CreateBucketConfiguration={{'LocationConstraint':'eu-west-1'}})\n\
         except c.exceptions.BucketAlreadyOwnedByYou:\n    pass\n"
    ));
    case(
        "wrong region",
        &[
            "tags",
            "a",
            "--store",
            "s3://s3dock-eu/x",
            "--region",
            "us-east-1",
            "--path-style",
        ],
        &[keys[0], keys[1], ("AWS_ENDPOINT_URL", moto.as_str())],
        &[
            "is in region eu-west-1, not us-east-1",
            "--region eu-west-1",
        ],
    );
    // The same bucket with its own region works: the check is not a false alarm.
    let mut right = s3dock();
    right
        .args([
            "tags",
            "a",
            "--store",
            "s3://s3dock-eu/x",
            "--region",
            "eu-west-1",
            "--path-style",
        ])
        .envs(keys)
        .env("AWS_ENDPOINT_URL", &moto);
    let o = right.output().unwrap();
    assert!(
        o.status.success(),
        "right region: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Not an archive: bytes with escape sequences are never echoed.
    let junk = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = b"GARBAGE\x1b[31mRED\x07 {not a tar}".to_vec();
    bytes.resize(1536, b'A');
    std::fs::write(junk.path(), &bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    case(
        "not a tar",
        &[
            "push",
            "a:1",
            "-i",
            junk.path().to_str().unwrap(),
            "--store",
            dir.path().to_str().unwrap(),
        ],
        &[],
        &["not a tar archive"],
    );

    for mut c in cases {
        let o = c.cmd.output().unwrap();
        let wants: Vec<&str> = c.wants.iter().map(String::as_str).collect();
        let line = one_error_line(&o, c.what, &wants);
        assert!(
            !line.contains("GARBAGE") && !line.contains("AAAA"),
            "{line}"
        );
    }
}

/// With -v the SDK's own message follows the error line (and nothing is coloured on a pipe).
#[test]
fn verbose_adds_the_sdk_detail() {
    let Some(moto) = moto() else { return };
    let closed = format!("http://127.0.0.1:{}", closed_port());
    for (what, ep, creds) in [
        ("no credentials", moto.as_str(), false),
        ("unreachable", closed.as_str(), true),
    ] {
        let mut c = s3dock();
        c.args([
            "-v",
            "tags",
            "a",
            "--store",
            "s3://s3dock-test/v",
            "--endpoint",
            ep,
            "--retries",
            "1",
        ]);
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "k")
                .env("AWS_SECRET_ACCESS_KEY", "s");
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: {err}");
        assert!(
            !err.contains('\x1b'),
            "{what}: ANSI codes on a pipe: {err:?}"
        );
        let detail = err
            .lines()
            .find_map(|l| l.strip_prefix("s3dock: detail: "))
            .unwrap_or_else(|| panic!("{what}: no SDK detail with -v: {err}"));
        assert!(detail.len() > 10, "{what}: {detail}");
        // Without -v, only the error line.
        let mut c = s3dock();
        c.args([
            "tags",
            "a",
            "--store",
            "s3://s3dock-test/v",
            "--endpoint",
            ep,
            "--retries",
            "1",
        ]);
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "k")
                .env("AWS_SECRET_ACCESS_KEY", "s");
        }
        one_error_line(&c.output().unwrap(), what, &[]);
    }
}

/// `--endpoint` without a region: no instance-metadata probe, so no SDK warnings. The
/// metadata endpoint points at a closed local port: a probe would fail there and warn.
#[test]
fn endpoint_without_region_is_quiet() {
    let Some(moto) = moto() else { return };
    assert!(venv_python().exists());
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let o = s3dock()
        .args([
            "tags",
            "none",
            "--store",
            "s3://s3dock-test/quiet",
            "--endpoint",
            &moto,
        ])
        .env("AWS_ACCESS_KEY_ID", test_keys().0)
        .env("AWS_SECRET_ACCESS_KEY", test_keys().1)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // `tags` of a repository that does not exist fails, but with only its own line.
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("s3dock: error: ")) && lines.len() <= 1,
        "SDK noise on stderr: {err}"
    );
}

/// The test servers' key (scripts/s3-servers.sh), for commands run with a cleared environment.
fn test_keys() -> (String, String) {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
}
