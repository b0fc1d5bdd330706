//! Small helpers shared by the netlink wrappers.

use futures::{Stream, TryStreamExt};

use crate::Error;

/// errno of a netlink NACK (positive), if that is what failed.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// The error of a failed request; `context` runs only on failure (a
/// program of 30 000 writes would otherwise format 30 000 unused strings).
pub fn nl_err(context: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |e| Error::Netlink {
        context: context(),
        source: e.into(),
    }
}

/// Collect a dump, with the context of what was dumped on failure.
pub async fn collect<T>(
    stream: impl Stream<Item = Result<T, rtnetlink::Error>>,
    what: &str,
) -> Result<Vec<T>, Error> {
    stream
        .try_collect()
        .await
        .map_err(nl_err(|| format!("dumping {what}")))
}

/// A write that failed with `harmless` (nothing left to do) succeeded.
pub fn ignoring(
    done: Result<(), rtnetlink::Error>,
    harmless: i32,
    context: impl FnOnce() -> String,
) -> Result<(), Error> {
    match done {
        Err(e) if errno(&e) != Some(harmless) => Err(nl_err(context)(e)),
        _ => Ok(()),
    }
}
