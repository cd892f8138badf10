//! A moto server of the test's own with IAM enforcement, for access-denied and
//! least-privilege tests. Moto authenticates and authorizes every request after the
//! first `INITIAL_NO_AUTH_ACTION_COUNT` against the IAM users and policies created in
//! it: those first three requests create an admin user (allow everything) and its key,
//! and everything after is signed with a key of a user made here.
//!
//! ```ignore
//! let Some(iam) = IamMoto::start() else { return };
//! iam.create_bucket("b");
//! let keys = iam.user("reader", &json!({"Version": "2012-10-17", "Statement": [...]}));
//! let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3dock"));
//! iam.env(&mut cmd, &keys);
//! ```
//!
//! Moto authorizes HeadBucket as `s3:HeadBucket` unless `scripts/setup.sh` patched it to
//! `s3:ListBucket` as AWS does; [`IamMoto::start`] checks that the patch is in.

use super::{python, require, venv_python};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

/// The admin's first three unauthenticated requests: CreateUser, PutUserPolicy, CreateAccessKey.
const SETUP_REQUESTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct Keys {
    pub id: String,
    pub secret: String,
}

pub struct IamMoto {
    pub endpoint: String,
    /// A user allowed every action, for setting up buckets, users and content.
    pub admin: Keys,
    child: Child,
}

impl IamMoto {
    /// Starts the server and creates the admin; None (a skip) when the moto venv is
    /// missing and peers are not required.
    pub fn start() -> Option<IamMoto> {
        let moto = venv_python().with_file_name("moto_server");
        if !require("moto_server (scripts/setup.sh)", moto.exists()) {
            return None;
        }
        let patched = python(
            "import moto.s3.responses as r\nprint(r.ACTION_MAP['BUCKET']['HEAD']['DEFAULT'])",
        );
        assert_eq!(
            patched.trim(),
            "ListBucket",
            "moto authorizes HeadBucket as s3:HeadBucket: run scripts/setup.sh to patch it"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut server = IamMoto {
            endpoint: format!("http://127.0.0.1:{port}"),
            admin: Keys {
                id: String::new(),
                secret: String::new(),
            },
            child,
        };
        // A TCP connect is no HTTP request, so it does not use up a setup request.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = server.child.try_wait().unwrap() {
                panic!("moto_server exited at start: {st}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = python(&format!(
            "{}\nk = make_user(boto3.client('iam', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='setup', aws_secret_access_key='setup'), 'admin', \
             {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}}]}})\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])",
            MAKE_USER, server.endpoint
        ));
        server.admin = parse_keys(&out);
        Some(server)
    }

    /// A boto3 client of `service` signed as `keys`, as Python source.
    fn client(&self, service: &str, keys: &Keys) -> String {
        format!(
            "boto3.client('{service}', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='{}', aws_secret_access_key='{}')",
            self.endpoint, keys.id, keys.secret
        )
    }

    /// Creates a bucket as the admin.
    pub fn create_bucket(&self, bucket: &str) {
        python(&format!(
            "import boto3\n{}.create_bucket(Bucket='{bucket}')",
            self.client("s3", &self.admin)
        ));
    }

    /// Creates `name` with `policy` as its only (inline) policy; returns its access key.
    pub fn user(&self, name: &str, policy: &serde_json::Value) -> Keys {
        let out = python(&format!(
            "{MAKE_USER}\nk = make_user({}, '{name}', json.loads({:?}))\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])",
            self.client("iam", &self.admin),
            policy.to_string()
        ));
        parse_keys(&out)
    }

    /// Points `cmd` (s3dock, aws, python) at this server as `keys`, with no other
    /// credential source to fall back on.
    pub fn env(&self, cmd: &mut Command, keys: &Keys) {
        cmd.env("AWS_ACCESS_KEY_ID", &keys.id)
            .env("AWS_SECRET_ACCESS_KEY", &keys.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
    }
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MAKE_USER: &str = "import boto3, json
def make_user(iam, name, policy):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=name)['AccessKey']";

fn parse_keys(out: &str) -> Keys {
    let mut it = out.split_whitespace();
    Keys {
        id: it.next().expect("access key id").to_string(),
        secret: it.next().expect("secret").to_string(),
    }
}
