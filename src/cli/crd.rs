//! `podroute crd [-o yaml|json]`: the ClusterRouting CustomResourceDefinition,
//! generated from the Rust types, for `kubectl apply -f -`. The output is
//! deterministic (same binary, same bytes), so it can be checked in and diffed.

use kube::CustomResourceExt;

use crate::api::ClusterRouting;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: CrdFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdFormat {
    #[default]
    Yaml,
    Json,
}

/// The CRD as text, ending in one newline.
pub fn render(format: CrdFormat) -> Result<String> {
    let crd = ClusterRouting::crd();
    let fail = |e: String| Error::io("encoding the CRD", std::io::Error::other(e));
    let text = match format {
        CrdFormat::Yaml => serde_yaml::to_string(&crd).map_err(|e| fail(e.to_string()))?,
        CrdFormat::Json => serde_json::to_string_pretty(&crd).map_err(|e| fail(e.to_string()))?,
    };
    Ok(format!("{}\n", text.trim_end()))
}

pub fn run(args: CrdArgs) -> Result<()> {
    print!("{}", render(args.output)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_describe_the_same_crd() {
        let yaml = render(CrdFormat::Yaml).unwrap();
        let json = render(CrdFormat::Json).unwrap();
        let from_yaml: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let from_json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(from_json["spec"]["names"]["kind"], "ClusterRouting");
        assert_eq!(render(CrdFormat::Yaml).unwrap(), yaml, "deterministic");
    }
}
