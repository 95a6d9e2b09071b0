//! Board model: which `model.yaml` files, which device and SKU, and the typed, validated
//! settings cgqos reads from them (`scheduler-tune` and cgqos's own `cgqos` section).

pub mod model;
/// The YAML tree moved to `crate::yaml` (it reads rules and daemon.yaml too); this name is
/// kept so `board::yaml::...` paths elsewhere still resolve.
pub use crate::yaml;

use std::path::PathBuf;

use serde::Serialize;

use crate::config_read::{self, ReadError, Trust};
use crate::cpulist::CpuList;
use crate::yaml::schema::{self, Map};
use crate::yaml::{Location, Node, YamlError};
use model::{DeviceConfig, Key};

/// Boards shipped with cgqos, built into the binary so `cgqos plan` works from a checkout
/// or a bare binary. A data directory (`--boards-dir`) overrides them by name.
pub const BUILTIN_BOARDS: &[(&str, &str)] = &[
    ("default", include_str!("../../boards/default/model.yaml")),
    ("trogdor", include_str!("../../boards/trogdor/model.yaml")),
    ("brya", include_str!("../../boards/brya/model.yaml")),
];

pub const DEFAULT_BOARD: &str = "default";
pub const DEFAULT_BOARDS_DIR: &str = "/usr/share/cgqos/boards";

/// A value and where it was set (`None`: the built-in default).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting<T> {
    pub value: T,
    #[serde(serialize_with = "ser_location")]
    pub at: Option<Location>,
}

fn ser_location<S: serde::Serializer>(at: &Option<Location>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(l) => s.collect_str(l),
        None => s.serialize_str("default"),
    }
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting { value, at: None }
    }
}

/// ChromeOS `scheduler-tune`, validated like its schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerTune {
    /// uclamp.min percent of urgent work (ui, foreground and their urgent threads).
    pub boost_urgent: Setting<u32>,
    pub input_boost: Option<Setting<u32>>,
    pub cpuset_nonurgent: Option<Setting<CpuList>>,
    pub boost_top_app: Option<Setting<u32>>,
    pub boost_arcvm: Option<Setting<f64>>,
}

/// cgqos's own settings, under `cgqos:` beside `scheduler-tune`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub ui_cpu_weight: Setting<u32>,
    pub foreground_cpu_weight: Setting<u32>,
    pub background_cpu_weight: Setting<u32>,
    pub arcvm: Setting<bool>,
    pub arcvm_cpu_weight: Setting<u32>,
    pub vm_cpu_weight: Setting<u32>,
    /// Remount cgroup2 with `favordynmods` in `setup` (moves skip the RCU grace period;
    /// forks and exits pay a little: docs/performance.md).
    pub favor_dynmods: Setting<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Board {
    pub name: String,
    pub sku: Option<i64>,
    pub files: Vec<String>,
    pub scheduler_tune: SchedulerTune,
    pub cgqos: Settings,
}

/// A setting as `validate` shows it: its value and where it was set; `None`: not set.
pub type Shown = Option<(String, Option<Location>)>;

fn shown<T: ToString>(s: &Setting<T>) -> Shown {
    Some((s.value.to_string(), s.at.clone()))
}

impl Board {
    /// Every key with its setting, in `model::KEYS` order.
    pub fn rows(&self) -> [(Key, Shown); 12] {
        let (t, c) = (&self.scheduler_tune, &self.cgqos);
        [
            (model::BOOST_URGENT, shown(&t.boost_urgent)),
            (model::INPUT_BOOST, t.input_boost.as_ref().and_then(shown)),
            (
                model::CPUSET_NONURGENT,
                t.cpuset_nonurgent.as_ref().and_then(shown),
            ),
            (
                model::BOOST_TOP_APP,
                t.boost_top_app.as_ref().and_then(shown),
            ),
            (model::BOOST_ARCVM, t.boost_arcvm.as_ref().and_then(shown)),
            (model::UI_CPU_WEIGHT, shown(&c.ui_cpu_weight)),
            (
                model::FOREGROUND_CPU_WEIGHT,
                shown(&c.foreground_cpu_weight),
            ),
            (
                model::BACKGROUND_CPU_WEIGHT,
                shown(&c.background_cpu_weight),
            ),
            (model::ARCVM, shown(&c.arcvm)),
            (model::ARCVM_CPU_WEIGHT, shown(&c.arcvm_cpu_weight)),
            (model::VM_CPU_WEIGHT, shown(&c.vm_cpu_weight)),
            (model::FAVOR_DYNMODS, shown(&c.favor_dynmods)),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// Not readable, not a regular file, or too large.
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Select(String),
}

/// Where board files come from.
#[derive(Debug, Clone, Default)]
pub struct BoardSource {
    /// `--model` files, later ones overlaying earlier ones.
    pub models: Vec<PathBuf>,
    pub board: Option<String>,
    pub sku: Option<i64>,
    pub boards_dir: Option<PathBuf>,
}

impl BoardSource {
    /// Loads the files and resolves the selected device into settings.
    pub fn load(&self) -> Result<Board, BoardError> {
        let mut docs = Vec::new();
        if self.models.is_empty() {
            let name = self.board.as_deref().unwrap_or(DEFAULT_BOARD);
            let (file, text) = self.board_file(name)?;
            docs.push(parse_file(&file, &text)?);
        } else {
            for path in &self.models {
                let text = config_read::read(path, Trust::Any)?;
                docs.push(parse_file(&path.display().to_string(), &text)?);
            }
        }
        resolve(&docs, self.board.as_deref(), self.sku)
    }

    /// The files `load` reads (a built-in board reads none).
    pub fn files(&self) -> Vec<PathBuf> {
        if !self.models.is_empty() {
            return self.models.clone();
        }
        let name = self.board.as_deref().unwrap_or(DEFAULT_BOARD);
        let dir = self
            .boards_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BOARDS_DIR));
        vec![dir.join(name).join("model.yaml")]
    }

    fn board_file(&self, name: &str) -> Result<(String, String), BoardError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(BoardError::Select(format!("invalid board name {name:?}")));
        }
        let dir = self
            .boards_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BOARDS_DIR));
        let path = dir.join(name).join("model.yaml");
        if let Some(text) = config_read::read_optional(&path, Trust::Any)? {
            return Ok((path.display().to_string(), text));
        }
        BUILTIN_BOARDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| (format!("<built-in>/boards/{n}/model.yaml"), text.to_string()))
            .ok_or_else(|| {
                let known: Vec<&str> = BUILTIN_BOARDS.iter().map(|(n, _)| *n).collect();
                // Installed boards are only named, for the suggestion; nothing in them is read.
                let installed: Vec<String> = std::fs::read_dir(&dir)
                    .map(|d| d.flatten().take(1000).filter_map(|e| e.file_name().into_string().ok()).collect())
                    .unwrap_or_default();
                BoardError::Select(format!(
                    "no board {name:?}{}: {} does not exist and no built-in board has that name (built-in: {})",
                    crate::suggest::suggest(name, known.iter().copied().chain(installed.iter().map(String::as_str))),
                    path.display(),
                    known.join(", ")
                ))
            })
    }
}

fn parse_file(file: &str, text: &str) -> Result<(String, Vec<DeviceConfig>), BoardError> {
    let doc = yaml::parse(file, text)?;
    Ok((file.to_string(), model::device_configs(&doc)?))
}

/// The device to use: `board`, else the only one, else `default`.
fn device_name(
    docs: &[(String, Vec<DeviceConfig>)],
    board: Option<&str>,
) -> Result<String, BoardError> {
    let mut distinct: Vec<&str> = docs
        .iter()
        .flat_map(|(_, cfgs)| cfgs.iter().map(|c| c.name.as_str()))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let name = match board {
        Some(b) if distinct.contains(&b) => b.to_string(),
        Some(b) => {
            return Err(BoardError::Select(format!(
                "no device named {b:?}{} in {} (devices: {})",
                crate::suggest::suggest(b, distinct.iter().copied()),
                docs.iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                distinct.join(", ")
            )));
        }
        None if distinct.len() == 1 => distinct[0].to_string(),
        None if distinct.contains(&DEFAULT_BOARD) => DEFAULT_BOARD.to_string(),
        None => {
            return Err(BoardError::Select(format!(
                "several devices and none named \"default\": choose one with --board (devices: {})",
                distinct.join(", ")
            )));
        }
    };
    Ok(name)
}

/// Picks one device (and SKU) and overlays its config from every file in order.
fn select(
    docs: &[(String, Vec<DeviceConfig>)],
    board: Option<&str>,
    sku: Option<i64>,
) -> Result<(String, Option<i64>, Node), BoardError> {
    let name = device_name(docs, board)?;
    let mut merged: Option<Node> = None;
    let mut chosen_sku = sku;
    for (file, cfgs) in docs {
        let matching: Vec<&DeviceConfig> = cfgs.iter().filter(|c| c.name == name).collect();
        if matching.is_empty() {
            return Err(BoardError::Select(format!(
                "{file}: no device named {name:?} to overlay (devices here: {})",
                cfgs.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let pick = match chosen_sku {
            Some(s) => matching
                .iter()
                .find(|c| c.sku == Some(s))
                .or_else(|| matching.iter().find(|c| c.sku.is_none()))
                .ok_or_else(|| {
                    BoardError::Select(format!(
                        "{file}: device {name:?} has no SKU {s} (SKUs: {})",
                        matching
                            .iter()
                            .map(|c| c.sku.map_or("-".into(), |s| s.to_string()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            None => {
                chosen_sku = matching[0].sku;
                &matching[0]
            }
        };
        match &mut merged {
            None => merged = Some(pick.config.clone()),
            Some(m) => m.overlay(&pick.config),
        }
    }
    Ok((name, chosen_sku, merged.expect("at least one file")))
}

/// A section of a device config (`scheduler-tune`, `cgqos`): absent or empty is empty.
fn section<'a>(config: &'a Node, name: &str, known: &[&str]) -> Result<Map<'a>, YamlError> {
    let m = match config.get(name) {
        None => Map::EMPTY,
        Some(n) if n.is_null() => Map::EMPTY,
        Some(n) => Map::of(n).ok_or_else(|| schema::must_be(n, name, "a mapping", n.kind()))?,
    };
    m.only(name, known)
}

fn setting<T>(node: &Node, value: T) -> Setting<T> {
    Setting {
        value,
        at: Some(node.at.clone()),
    }
}

pub const DEFAULT_BOOST_URGENT: u32 = 20;

fn scheduler_tune(config: &Node) -> Result<SchedulerTune, YamlError> {
    let entries = section(config, model::TUNE, &model::section_keys(model::TUNE))?;
    let percent = |k: &Key| -> Result<Option<Setting<u32>>, YamlError> {
        entries
            .get(k.name)
            .map(|n| schema::plain_int_in(n, &k.path(), 0, 100).map(|v| setting(n, v)))
            .transpose()
    };
    // Read in this order so that of several errors the same one is reported as always.
    let cpuset_nonurgent = entries
        .get(model::CPUSET_NONURGENT.name)
        .map(cpuset_nonurgent)
        .transpose()?;
    let boost_arcvm = match entries.get(model::BOOST_ARCVM.name) {
        None => None,
        Some(n) => {
            let v = schema::plain_number_in(n, &model::BOOST_ARCVM.path(), 0.0, 1.0)?;
            Some(setting(n, v))
        }
    };
    Ok(SchedulerTune {
        boost_urgent: percent(&model::BOOST_URGENT)?
            .unwrap_or_else(|| Setting::default(DEFAULT_BOOST_URGENT)),
        input_boost: percent(&model::INPUT_BOOST)?,
        cpuset_nonurgent,
        boost_top_app: percent(&model::BOOST_TOP_APP)?,
        boost_arcvm,
    })
}

/// `scheduler-tune.cpuset-nonurgent`: a non-empty CPU list.
fn cpuset_nonurgent(n: &Node) -> Result<Setting<CpuList>, YamlError> {
    let key = model::CPUSET_NONURGENT.path();
    const SHAPE: &str = "a CPU list such as \"0-5\"";
    let text = n
        .as_str()
        .ok_or_else(|| schema::expected(n, &key, SHAPE, n.kind()))?;
    let list: CpuList = text.parse().map_err(|e: crate::cpulist::CpuListError| {
        n.error(format!("{key}: expected {SHAPE}: {}", e.reason))
    })?;
    if list.is_empty() {
        return Err(schema::expected(n, &key, SHAPE, "an empty list"));
    }
    Ok(setting(n, list))
}

fn settings(config: &Node) -> Result<Settings, YamlError> {
    let entries = section(config, model::CGQOS, &model::section_keys(model::CGQOS))?;
    let weight = |k: &Key, default: u32| -> Result<Setting<u32>, YamlError> {
        match entries.get(k.name) {
            Some(n) => schema::plain_int_in(n, &k.path(), 1, 10000).map(|v| setting(n, v)),
            None => Ok(Setting::default(default)),
        }
    };
    let flag = |k: &Key| -> Result<Setting<bool>, YamlError> {
        match entries.get(k.name) {
            Some(n) => Ok(setting(n, schema::plain_bool(n, &k.path())?)),
            None => Ok(Setting::default(false)),
        }
    };
    Ok(Settings {
        ui_cpu_weight: weight(&model::UI_CPU_WEIGHT, 100)?,
        foreground_cpu_weight: weight(&model::FOREGROUND_CPU_WEIGHT, 100)?,
        background_cpu_weight: weight(&model::BACKGROUND_CPU_WEIGHT, 1)?,
        arcvm: match entries.get(model::ARCVM.name) {
            Some(n) => setting(n, schema::plain_bool(n, &model::ARCVM.path())?),
            None => Setting::default(true),
        },
        arcvm_cpu_weight: weight(&model::ARCVM_CPU_WEIGHT, 100)?,
        vm_cpu_weight: weight(&model::VM_CPU_WEIGHT, 100)?,
        favor_dynmods: flag(&model::FAVOR_DYNMODS)?,
    })
}

/// Loads a board from in-memory files (tests and `validate` of literal text).
pub fn load_texts(
    files: &[(&str, &str)],
    board: Option<&str>,
    sku: Option<i64>,
) -> Result<Board, BoardError> {
    let docs = files
        .iter()
        .map(|(f, t)| parse_file(f, t))
        .collect::<Result<Vec<_>, _>>()?;
    resolve(&docs, board, sku)
}

fn resolve(
    docs: &[(String, Vec<DeviceConfig>)],
    board: Option<&str>,
    sku: Option<i64>,
) -> Result<Board, BoardError> {
    let (name, sku, config) = select(docs, board, sku)?;
    Ok(Board {
        name,
        sku,
        files: docs.iter().map(|(f, _)| f.clone()).collect(),
        scheduler_tune: scheduler_tune(&config)?,
        cgqos: settings(&config)?,
    })
}
