//! Reading the ClusterRouting object: what a missing CRD or object means.

use crate::Error;

/// A 404 that is not an object's NotFound: the API server does not serve
/// clusterroutings at all (the CRD is not installed).
pub fn crd_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.reason != "NotFound")
}

/// What to tell a user whose cluster lacks the CRD, or the `default` object.
pub fn routing_read_error(e: kube::Error) -> Error {
    match &e {
        _ if crd_missing(&e) => Error::invalid(
            "ClusterRouting",
            "the cluster has no CRD clusterroutings.podroute.io: install podroute \
             (kubectl apply -k manifests/restricted) or `podroute crd | kubectl apply -f -`",
        ),
        kube::Error::Api(s) if s.code == 404 => Error::invalid(
            "ClusterRouting",
            "no ClusterRouting named default (manifests/base/clusterrouting.yaml creates it)",
        ),
        _ => Error::kube("reading ClusterRouting default", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_crd_is_told_from_a_missing_object() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(
                kube::core::Status::failure("x", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        // What kube-apiserver answers for a resource it does not serve: a
        // plain "404 page not found", which kube-rs turns into this Status.
        assert!(crd_missing(&api(404, "Failed to parse error data")));
        assert!(!crd_missing(&api(404, "NotFound")));
        assert!(!crd_missing(&api(403, "Forbidden")));
        let text = |e: kube::Error| routing_read_error(e).to_string();
        assert!(text(api(404, "")).contains("podroute crd | kubectl apply"));
        assert!(text(api(404, "NotFound")).contains("no ClusterRouting named default"));
        assert!(text(api(403, "Forbidden")).starts_with("reading ClusterRouting default"));
    }
}
