//! How a failure reads: one line on stderr, `s3dock: error: ` then what failed and
//! what to do about it. The store's typed errors get their own wording here; any
//! other error is its chain of causes on one line. Nothing here is a Debug dump.

use s3dock::model::text::printable;
use s3dock::store::StoreError;

/// Untrusted or long parts (bucket names, keys, endpoints, SDK messages) are cut to
/// this many characters, so every line stays within ~200.
const PART: usize = 60;
const NAME: usize = 40;

/// The error line, without the `s3dock: error: ` prefix.
pub fn line(e: &anyhow::Error) -> String {
    match store_error(e) {
        Some(se) => store_line(se),
        None => chain_line(e),
    }
}

/// The SDK's own message behind a store error, shown with `-v`.
pub fn detail(e: &anyhow::Error) -> Option<String> {
    store_error(e)
        .and_then(StoreError::detail)
        .map(|d| cut(d, 400))
}

fn store_error(e: &anyhow::Error) -> Option<&StoreError> {
    e.chain().find_map(|c| c.downcast_ref::<StoreError>())
}

fn store_line(e: &StoreError) -> String {
    match e {
        StoreError::NoCredentials { .. } => "no AWS credentials found: set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or name a profile with --aws-profile (AWS_PROFILE), or run \
             with an IAM role"
            .to_string(),
        StoreError::BadCredentials { op, code, .. } => format!(
            "S3 refused these credentials ({}) on {}: check AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY or the profile's keys",
            cut(code, 32),
            cut(op, 32)
        ),
        StoreError::AccessDenied {
            action, resource, ..
        } => format!(
            "access denied: these credentials may not {action} on {}: allow it in their IAM \
             policy or use other credentials",
            cut(resource, PART)
        ),
        StoreError::NoSuchBucket(b) => {
            let b = cut(b, NAME);
            format!(
                "bucket {b:?} does not exist: create it first (aws s3 mb s3://{b}) or fix --store"
            )
        }
        StoreError::WrongRegion {
            bucket,
            region: Some(r),
            configured,
        } => {
            let (bucket, region) = (cut(bucket, NAME), cut(r, 20));
            format!(
                "bucket {bucket:?} is in region {region}, not {}: use --region {region} (or S3DOCK_REGION)",
                cut(configured, 20)
            )
        }
        StoreError::WrongRegion {
            bucket, configured, ..
        } => format!(
            "bucket {:?} is not in region {}: set --region to the bucket's region",
            cut(bucket, NAME),
            cut(configured, 20)
        ),
        StoreError::Unreachable {
            bucket,
            endpoint,
            detail,
        } => format!(
            "cannot reach bucket {:?} at {} ({}): check --endpoint and the network",
            cut(bucket, NAME),
            cut(endpoint, NAME),
            cut(innermost(detail), NAME)
        ),
        other => chain_line_of(other.to_string()),
    }
}

/// The last cause in an SDK message chain ("...: tcp connect error: Connection refused
/// (os error 111)" gives "Connection refused (os error 111)").
fn innermost(detail: &str) -> &str {
    detail.rsplit(": ").next().unwrap_or(detail)
}

/// The error and its causes on one line, control characters escaped (errors can
/// quote store content).
fn chain_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = printable(&c.to_string().replace('\n', " ")).into_owned();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn chain_line_of(s: String) -> String {
    printable(&s.replace('\n', " ")).into_owned()
}

/// At most `max` characters, escaped, with an ellipsis when cut.
fn cut(s: &str, max: usize) -> String {
    let p = printable(s);
    if p.chars().count() <= max {
        return p.into_owned();
    }
    let mut out: String = p.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_class_is_one_short_line() {
        let long = "k".repeat(500);
        let errors = [
            StoreError::NoCredentials { detail: "x".into() },
            StoreError::BadCredentials {
                op: "PutObject".into(),
                resource: long.clone(),
                code: "InvalidAccessKeyId".into(),
            },
            StoreError::AccessDenied {
                action: "s3:PutObject",
                resource: long.clone(),
                detail: "x".into(),
            },
            StoreError::NoSuchBucket("b\x1b[31m".into()),
            StoreError::WrongRegion {
                bucket: "b".into(),
                region: Some("eu-west-1".into()),
                configured: "us-east-1".into(),
            },
            StoreError::Unreachable {
                bucket: "b".into(),
                endpoint: long.clone(),
                detail: long,
            },
        ];
        for e in errors {
            let l = line(&anyhow::Error::new(e));
            // 200 with the `s3dock: error: ` prefix.
            assert!(l.chars().count() <= 185, "{} chars: {l}", l.chars().count());
            assert!(!l.contains('\n') && !l.contains('\x1b'), "{l}");
        }
    }
}
