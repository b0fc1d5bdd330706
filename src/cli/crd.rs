//! `podroute crd [-o yaml|json]`: podroute's CustomResourceDefinitions
//! (ClusterRouting, then PodrouteNode), generated from the Rust types, for
//! `kubectl apply -f -`: YAML documents, or a JSON `List`. The output is
//! deterministic (same binary, same bytes), so it can be checked in and diffed.

use kube::CustomResourceExt;

use crate::api::{ClusterRouting, PodrouteNode};
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

/// The CRDs as text, ending in one newline.
pub fn render(format: CrdFormat) -> Result<String> {
    let crds = [ClusterRouting::crd(), PodrouteNode::crd()];
    let fail = |e: String| Error::io("encoding the CRDs", std::io::Error::other(e));
    let text = match format {
        CrdFormat::Yaml => {
            let docs = crds
                .iter()
                .map(|crd| serde_yaml::to_string(crd).map_err(|e| fail(e.to_string())))
                .collect::<Result<Vec<_>>>()?;
            docs.join("---\n")
        }
        CrdFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": crds});
            serde_json::to_string_pretty(&list).map_err(|e| fail(e.to_string()))?
        }
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
        let from_yaml: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect();
        let from_json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::Value::from(from_yaml), from_json["items"]);
        assert_eq!(
            from_json["items"][0]["spec"]["names"]["kind"],
            "ClusterRouting"
        );
        assert_eq!(
            from_json["items"][1]["spec"]["names"]["kind"],
            "PodrouteNode"
        );
        assert_eq!(render(CrdFormat::Yaml).unwrap(), yaml, "deterministic");
    }
}
