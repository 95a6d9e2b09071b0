//! ChromeOS `model.yaml` resolution: devices, SKUs, `$variables` and `{{$var}}` templates.
//!
//! Two shapes are read, as board overlays write them:
//! - source form: `chromeos: devices: - $device-name: x  skus: - $sku-id: N  config: {...}`;
//! - flattened form: `chromeos: configs: - name: x  identity: {sku-id: N}  ...`.
//!
//! Only the parts cgqos uses (`name`, `scheduler-tune`, `cgqos`) are templated; audio,
//! camera and the rest may hold variables we never resolve, so they are left alone.

use std::collections::BTreeMap;

use crate::yaml::schema::{self, describe};
use crate::yaml::{Location, Node, Value, YamlError};

/// ChromeOS's scheduler settings.
pub const TUNE: &str = "scheduler-tune";
/// cgqos's own settings.
pub const CGQOS: &str = "cgqos";

/// Sections of a device config that cgqos reads; everything else is ignored.
pub const SECTIONS: [&str; 2] = [TUNE, CGQOS];

/// A board setting: the one place its key is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    /// What `validate` says of it when the board does not set it (empty: it has a default).
    pub unset: &'static str,
}

impl Key {
    const fn new(section: &'static str, name: &'static str, unset: &'static str) -> Key {
        Key {
            section,
            name,
            unset,
        }
    }

    /// `section.name`, as errors and `validate` show it.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.section, self.name)
    }
}

pub const BOOST_URGENT: Key = Key::new(TUNE, "boost-urgent", "");
pub const INPUT_BOOST: Key = Key::new(TUNE, "input-boost", "not set");
pub const CPUSET_NONURGENT: Key = Key::new(TUNE, "cpuset-nonurgent", "detected");
pub const BOOST_TOP_APP: Key = Key::new(TUNE, "boost-top-app", "computed");
pub const BOOST_ARCVM: Key = Key::new(TUNE, "boost-arcvm", "not set");
pub const UI_CPU_WEIGHT: Key = Key::new(CGQOS, "ui-cpu-weight", "");
pub const FOREGROUND_CPU_WEIGHT: Key = Key::new(CGQOS, "foreground-cpu-weight", "");
pub const BACKGROUND_CPU_WEIGHT: Key = Key::new(CGQOS, "background-cpu-weight", "");
pub const ARCVM: Key = Key::new(CGQOS, "arcvm", "");
pub const ARCVM_CPU_WEIGHT: Key = Key::new(CGQOS, "arcvm-cpu-weight", "");
pub const VM_CPU_WEIGHT: Key = Key::new(CGQOS, "vm-cpu-weight", "");
pub const FAVOR_DYNMODS: Key = Key::new(CGQOS, "favor-dynmods", "");

/// Every key, in the order `validate` lists them and unknown-key errors name them.
pub const KEYS: [Key; 12] = [
    BOOST_URGENT,
    INPUT_BOOST,
    CPUSET_NONURGENT,
    BOOST_TOP_APP,
    BOOST_ARCVM,
    UI_CPU_WEIGHT,
    FOREGROUND_CPU_WEIGHT,
    BACKGROUND_CPU_WEIGHT,
    ARCVM,
    ARCVM_CPU_WEIGHT,
    VM_CPU_WEIGHT,
    FAVOR_DYNMODS,
];

/// The key names of one section, in table order.
pub fn section_keys(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.name)
        .collect()
}

/// One device/SKU of one file, with its resolved name and the sections cgqos reads.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub name: String,
    pub sku: Option<i64>,
    /// A mapping with only the `SECTIONS` keys, templates expanded.
    pub config: Node,
}

const MAX_TEMPLATE_DEPTH: usize = 16;

/// All device configs of one parsed file, in file order.
pub fn device_configs(doc: &Node) -> Result<Vec<DeviceConfig>, YamlError> {
    if doc.as_map().is_none() {
        return Err(doc.error(format!(
            "expected a mapping with a `chromeos` key at the top, found {}",
            doc.kind()
        )));
    }
    let chromeos = doc
        .get("chromeos")
        .ok_or_else(|| doc.error("no `chromeos` key at the top level (expected `chromeos: devices:` or `chromeos: configs:`)"))?;
    let mut out = Vec::new();
    let devices = chromeos.get("devices");
    let configs = chromeos.get("configs");
    if devices.is_none() && configs.is_none() {
        return Err(chromeos.error("`chromeos` has neither `devices` nor `configs`"));
    }
    if let Some(devices) = devices {
        let list = devices.as_seq().ok_or_else(|| {
            schema::must_be(devices, "chromeos.devices", "a list", devices.kind())
        })?;
        for device in list {
            source_form_device(device, &mut out)?;
        }
    }
    if let Some(configs) = configs {
        let list = configs.as_seq().ok_or_else(|| {
            schema::must_be(configs, "chromeos.configs", "a list", configs.kind())
        })?;
        for config in list {
            let sku = match config.get("identity").and_then(|i| i.get("sku-id")) {
                Some(n) => Some(int_of(n, "identity.sku-id")?),
                None => None,
            };
            let vars = BTreeMap::new();
            let name = match config.get("name") {
                Some(n) => expand_str(n, &vars)?,
                None => return Err(config.error("a `chromeos.configs` entry has no `name`")),
            };
            out.push(DeviceConfig {
                name,
                sku,
                config: pick_sections(config, &vars)?,
            });
        }
    }
    if out.is_empty() {
        return Err(chromeos.error("no device or config defined"));
    }
    Ok(out)
}

fn source_form_device(device: &Node, out: &mut Vec<DeviceConfig>) -> Result<(), YamlError> {
    if device.as_map().is_none() {
        return Err(device.error(format!(
            "a device must be a mapping, found {}",
            device.kind()
        )));
    }
    let device_vars = variables(device, &BTreeMap::new());
    let skus = device
        .get("skus")
        .ok_or_else(|| device.error("device has no `skus` list"))?;
    let skus = skus
        .as_seq()
        .ok_or_else(|| schema::must_be(skus, "skus", "a list", skus.kind()))?;
    if skus.is_empty() {
        return Err(device.error("device has an empty `skus` list"));
    }
    for sku in skus {
        let vars = variables(sku, &device_vars);
        let config = sku
            .get("config")
            .ok_or_else(|| sku.error("SKU has no `config`"))?;
        if config.as_map().is_none() {
            return Err(schema::must_be(
                config,
                "config",
                "a mapping",
                config.kind(),
            ));
        }
        let sku_id = match sku.get("$sku-id").or_else(|| sku.get("sku-id")) {
            Some(n) => Some(int_of(n, "$sku-id")?),
            None => None,
        };
        let name = match config.get("name") {
            Some(n) => expand_str(n, &vars)?,
            None => match vars.get("device-name") {
                Some(n) => expand_str(n, &vars)?,
                None => {
                    return Err(
                        config.error("config has no `name` and the device no `$device-name`")
                    );
                }
            },
        };
        out.push(DeviceConfig {
            name,
            sku: sku_id,
            config: pick_sections(config, &vars)?,
        });
    }
    Ok(())
}

/// `$name: value` keys of a mapping, layered over the enclosing scope's.
fn variables<'a>(node: &'a Node, outer: &BTreeMap<String, &'a Node>) -> BTreeMap<String, &'a Node> {
    let mut vars = outer.clone();
    for (k, v) in node.as_map().unwrap_or_default() {
        if let Some(name) = k.as_str().and_then(|k| k.strip_prefix('$')) {
            vars.insert(name.to_string(), v);
        }
    }
    vars
}

fn int_of(node: &Node, what: &str) -> Result<i64, YamlError> {
    node.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| schema::must_be(node, what, "an integer", &describe(node)))
}

fn pick_sections(config: &Node, vars: &BTreeMap<String, &Node>) -> Result<Node, YamlError> {
    let mut entries = Vec::new();
    for (k, v) in config.as_map().unwrap_or_default() {
        if k.as_str().is_some_and(|k| SECTIONS.contains(&k)) {
            entries.push((k.clone(), expand(v, vars)?));
        }
    }
    let mut node = config.clone();
    node.value = Value::Map(entries);
    Ok(node)
}

fn expand(node: &Node, vars: &BTreeMap<String, &Node>) -> Result<Node, YamlError> {
    let mut out = node.clone();
    out.value = match &node.value {
        Value::Scalar { text, quoted } if text.contains("{{") => Value::Scalar {
            text: expand_text(text, &node.at, vars, 0)?,
            quoted: *quoted,
        },
        Value::Scalar { .. } => node.value.clone(),
        Value::Seq(items) => Value::Seq(
            items
                .iter()
                .map(|i| expand(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), expand(v, vars)?)))
                .collect::<Result<_, YamlError>>()?,
        ),
    };
    Ok(out)
}

fn expand_str(node: &Node, vars: &BTreeMap<String, &Node>) -> Result<String, YamlError> {
    let text = node
        .as_str()
        .ok_or_else(|| node.error(format!("expected a string, found {}", node.kind())))?;
    expand_text(text, &node.at, vars, 0)
}

/// Replaces `{{$var}}` (variables may themselves hold templates, to a bounded depth).
fn expand_text(
    text: &str,
    at: &Location,
    vars: &BTreeMap<String, &Node>,
    depth: usize,
) -> Result<String, YamlError> {
    let err = |message: String| YamlError {
        at: at.clone(),
        message,
    };
    if depth > MAX_TEMPLATE_DEPTH {
        return Err(err(
            "template variables refer to each other in a loop".into()
        ));
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| err(format!("unterminated template in {text:?}")))?;
        let name = after[..end].trim();
        let name = name
            .strip_prefix('$')
            .ok_or_else(|| err(format!("template `{{{{{name}}}}}` must name a `$variable`")))?;
        let value = vars
            .get(name)
            .ok_or_else(|| err(format!("template uses undefined variable `${name}`")))?;
        let value_text = value.as_str().ok_or_else(|| {
            err(format!(
                "variable `${name}` is {}, not a scalar",
                value.kind()
            ))
        })?;
        out.push_str(&expand_text(value_text, at, vars, depth + 1)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::yaml::parse;

    #[test]
    fn source_form_with_variables_templates_and_skus() {
        let doc = parse(
            "m.yaml",
            r#"
base: &base
  scheduler-tune:
    boost-urgent: 20
chromeos:
  devices:
    - $device-name: "lazor"
      $fw: "{{$device-name}}-fw"
      skus:
        - $sku-id: 0
          config:
            <<: *base
            name: "{{$device-name}}"
            firmware: {image: "{{$undefined-but-ignored}}"}
        - $sku-id: 6
          config:
            name: "{{$fw}}"
            scheduler-tune: {input-boost: 75}
"#,
        )
        .unwrap();
        let cfgs = device_configs(&doc).unwrap();
        assert_eq!(cfgs.len(), 2);
        assert_eq!((cfgs[0].name.as_str(), cfgs[0].sku), ("lazor", Some(0)));
        assert!(cfgs[0].config.get("firmware").is_none());
        assert!(cfgs[0].config.get("scheduler-tune").is_some());
        assert_eq!((cfgs[1].name.as_str(), cfgs[1].sku), ("lazor-fw", Some(6)));
    }

    #[test]
    fn flattened_form() {
        let doc = parse(
            "f.yaml",
            "chromeos:\n  configs:\n    - name: a\n      identity: {sku-id: 3}\n      scheduler-tune: {boost-urgent: 30}\n",
        )
        .unwrap();
        let cfgs = device_configs(&doc).unwrap();
        assert_eq!((cfgs[0].name.as_str(), cfgs[0].sku), ("a", Some(3)));
    }

    #[test]
    fn undefined_variable_in_a_read_section_is_an_error() {
        let doc = parse(
            "u.yaml",
            "chromeos:\n  devices:\n    - $device-name: x\n      skus:\n        - config:\n            cgqos: {note: \"{{$nope}}\"}\n",
        )
        .unwrap();
        let e = device_configs(&doc).unwrap_err();
        assert_eq!(e.at.line, 6);
        assert!(e.message.contains("undefined variable `$nope`"), "{e}");
    }

    #[test]
    fn every_key_is_spelled_once_in_a_known_section_and_has_a_row() {
        let mut paths: Vec<String> = KEYS.iter().map(Key::path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), KEYS.len(), "a key is listed twice");
        assert!(KEYS.iter().all(|k| SECTIONS.contains(&k.section)));
        let board = crate::board::load_texts(
            &[("b.yaml", "chromeos:\n  configs:\n    - name: b\n")],
            None,
            None,
        )
        .unwrap();
        let rows: Vec<Key> = board.rows().iter().map(|(k, _)| *k).collect();
        assert_eq!(rows, KEYS, "Board::rows follows KEYS");
    }
}
