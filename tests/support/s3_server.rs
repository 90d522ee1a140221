//! Test support: a real S3-compatible server (moto's server, from PyPI) on 127.0.0.1 and a free port, started by
//! the test itself and killed on drop. Optionally with signature validation (moto's IAM auth, enabled
//! after the three IAM calls that create the test user and its keys) or with TLS (a self-signed
//! certificate moto generates). Also an SDK client built independently of litevisor's, to look at the
//! bucket from the outside.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use litevisor::replica::s3::{S3Options, Secret};

/// The replica settings for `bucket`/`path` at `endpoint` with the keys every test server takes
/// (`test`/`test`); tests override the one field they are about with `..test_options(..)`.
pub fn test_options(endpoint: &str, bucket: &str, path: &str) -> S3Options {
    S3Options {
        bucket: bucket.into(),
        path: path.into(),
        endpoint: Some(endpoint.to_string()),
        access_key_id: Some("test".into()),
        secret_access_key: Some(Secret::new("test")),
        ..S3Options::default()
    }
}

/// `program` (litestream or litevisor) set up to talk to a test server: the test keys, no
/// instance-metadata lookups, and no CA bundle from the environment.
pub fn s3_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

pub struct S3Server {
    pub port: u16,
    pub endpoint: String,
    /// (access key id, secret) of the IAM user when auth is on.
    pub keys: Option<(String, String)>,
    child: Child,
    log: std::path::PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// moto's server with one fix (the script says which and why).
const MOTO: &str = include_str!("moto_server.py");

const SETUP_IAM: &str = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup", verify=False)
iam.create_user(UserName="litevisor")
iam.put_user_policy(UserName="litevisor", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="litevisor")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;

impl S3Server {
    /// A started server with `bucket` already created.
    pub fn with_bucket(bucket: &str) -> S3Server {
        let server = S3Server::start();
        server.create_bucket(bucket);
        server
    }

    /// [`test_options`] for `bucket`/`path` on this server.
    pub fn options(&self, bucket: &str, path: &str) -> S3Options {
        test_options(&self.endpoint, bucket, path)
    }

    /// Plain HTTP, any credentials accepted.
    pub fn start() -> S3Server {
        Self::launch(false, false)
    }

    /// Requests must be signed with `keys` (SigV4 checked by moto).
    pub fn start_with_auth() -> S3Server {
        Self::launch(true, false)
    }

    /// HTTPS with a self-signed certificate.
    pub fn start_tls() -> S3Server {
        Self::launch(false, true)
    }

    /// Plain HTTP on `port`: for a test where litevisor looks there before the server exists.
    pub fn start_on(port: u16) -> S3Server {
        Self::launch_on(port, false, false)
    }

    fn launch(auth: bool, tls: bool) -> S3Server {
        Self::launch_on(free_port(), auth, tls)
    }

    fn launch_on(port: u16, auth: bool, tls: bool) -> S3Server {
        let log = std::env::temp_dir().join(format!("litevisor-moto-{port}.log"));
        let out = std::fs::File::create(&log).expect("moto log");
        let mut cmd = Command::new("python3");
        cmd.args(["-c", MOTO, "-H", "127.0.0.1", "-p", &port.to_string()]);
        if tls {
            cmd.arg("-s");
        }
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        cmd.env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out);
        let child = cmd
            .spawn()
            .expect("start moto: is `moto[server]` installed? (scripts/install-test-deps)");
        let scheme = if tls { "https" } else { "http" };
        let mut server = S3Server {
            port,
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            keys: None,
            child,
            log,
        };
        // With auth, an HTTP probe would use up one of the unauthenticated actions.
        server.wait_ready(tls || auth);
        if auth {
            let out = super::run_ok(
                "IAM setup",
                Command::new("python3")
                    .args(["-c", SETUP_IAM, &server.endpoint])
                    .env_remove("AWS_CA_BUNDLE"),
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace();
            let (id, secret) = (it.next().expect("key id"), it.next().expect("secret"));
            server.keys = Some((id.to_string(), secret.to_string()));
        }
        server
    }

    fn wait_ready(&mut self, tcp_only: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto exited early ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                if tcp_only {
                    return;
                }
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let req = format!(
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut resp = Vec::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_end(&mut resp).is_ok()
                    && resp.starts_with(b"HTTP/1.")
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a bucket (with boto3, independent of the code under test; works with auth and TLS).
    pub fn create_bucket(&self, bucket: &str) {
        let (id, secret) = self
            .keys
            .clone()
            .unwrap_or_else(|| ("test".to_string(), "test".to_string()));
        let script = "import boto3, sys\n\
boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id=sys.argv[2], \
aws_secret_access_key=sys.argv[3], verify=False).create_bucket(Bucket=sys.argv[4])";
        super::run_ok(
            &format!("create bucket {bucket}"),
            Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    script,
                    &self.endpoint,
                    &id,
                    &secret,
                    bucket,
                ])
                .env_remove("AWS_CA_BUNDLE"),
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An SDK client made here, not by litevisor: it inspects what litevisor (or Litestream) stored.
pub fn sdk_client(
    endpoint: &str,
    keys: Option<(String, String)>,
) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (id, secret) = keys.unwrap_or_else(|| ("test".to_string(), "test".to_string()));
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            id, secret, None, None, "test",
        ))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    (rt, aws_sdk_s3::Client::from_conf(conf))
}

/// Every key in the bucket with its size, sorted.
pub fn list_keys(
    rt: &tokio::runtime::Runtime,
    client: &aws_sdk_s3::Client,
    bucket: &str,
) -> Vec<(String, u64)> {
    rt.block_on(async {
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.expect("list").contents() {
                keys.push((
                    o.key().unwrap_or_default().to_string(),
                    o.size().unwrap_or(0) as u64,
                ));
            }
        }
        keys.sort();
        keys
    })
}

/// HEAD of `bucket`/`key` through the AWS SDK: the object as any other S3 reader sees it.
pub fn head(
    rt: &tokio::runtime::Runtime,
    sdk: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    rt.block_on(sdk.head_object().bucket(bucket).key(key).send())
        .unwrap_or_else(|e| panic!("HEAD {bucket}/{key}: {e}"))
}

/// The `litestream-timestamp` metadata of an object: the LTX header time Litestream reads.
pub fn litestream_timestamp(
    head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
) -> Option<&str> {
    head.metadata()
        .and_then(|m| m.get("litestream-timestamp"))
        .map(String::as_str)
}
