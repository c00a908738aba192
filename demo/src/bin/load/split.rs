//! `--split`: the demo split over two processes (`--modules gate` with the broker, and
//! `--modules chat,login` exporting its spans by OTLP to the gate process's collector, as
//! README's commands run it), through the embedded broker and through mosquitto when it is
//! installed, against a bare MQTT request/reply floor through the same broker with as many
//! connections and requests in flight; plus the demo in one process.
//!
//! Per broker, in every round: `bare` (the floor), `untraced` (anonymous clients), `traced`
//! (logged-in clients, every request traced), and through a second pair of processes at
//! `--sample-ratio 0.1` (failed and slow requests kept) `10%-base` (anonymous clients, its
//! own untraced baseline) and `10%` (logged-in clients); then `1-process` (untraced).

use std::any::Any;

use demo::harness::{median, DemoProcess, Mosquitto};

use crate::bare::Responder;
use crate::door::{Door, Kind};
use crate::phase::Mode;
use crate::{Cli, Medians, Plan, Spec};

/// The gate process's collector (and viewer) thread, reported apart from its process.
const THREAD_COLLECTOR: &str = "in gate: collector";
/// The modules process's OTLP export thread, reported apart from its process.
const THREAD_EXPORT: &str = "in modules: OTLP export";

/// The brokers of a split run.
#[derive(Clone, Copy)]
enum Broker {
    Embedded,
    Mosquitto,
}

impl Broker {
    fn prefix(self) -> &'static str {
        match self {
            Broker::Embedded => "emb",
            Broker::Mosquitto => "mosq",
        }
    }
}

/// The gate process and the modules process of one pair, and its broker's address.
struct Pair {
    gate: DemoProcess,
    modules: DemoProcess,
    broker: String,
    mosquitto: Option<Mosquitto>,
}

fn pair(broker: Broker, ratio: &str) -> Result<Pair, String> {
    let mosquitto = match broker {
        Broker::Embedded => None,
        Broker::Mosquitto => Some(Mosquitto::start()?),
    };
    let url = mosquitto.as_ref().map_or("embedded".to_string(), |m| {
        format!("mqtt://127.0.0.1:{}", m.port)
    });
    let gate = DemoProcess::start(&[
        "--modules",
        "gate",
        "--broker",
        &url,
        "--sample-ratio",
        ratio,
    ])?;
    let broker = match &mosquitto {
        Some(m) => format!("127.0.0.1:{}", m.port),
        None => gate
            .broker
            .clone()
            .ok_or("the gate process did not log its embedded broker")?,
    };
    let otlp = format!("http://{}", gate.collector);
    let modules = DemoProcess::start_modules(&[
        "--modules",
        "chat,login",
        "--broker",
        &format!("mqtt://{broker}"),
        "--otlp",
        &otlp,
        "--sample-ratio",
        ratio,
    ])?;
    Ok(Pair {
        gate,
        modules,
        broker,
        mosquitto,
    })
}

impl Pair {
    /// The gate's door, measuring the modules process and mosquitto too.
    fn door(&self) -> Result<Door, String> {
        let mut door = Door::parse(&self.gate.gate, Kind::Tcp, Some(self.gate.pid()))?
            .measuring("modules", self.modules.pid())
            .measuring_thread(THREAD_COLLECTOR, self.gate.pid(), "mqrs-http")
            .measuring_thread(THREAD_EXPORT, self.modules.pid(), "mqrs-otlp-expor");
        if let Some(m) = &self.mosquitto {
            door = door.measuring("mosquitto", m.pid());
        }
        Ok(door)
    }
}

/// Starts every process of the run and lists its phases.
pub fn plan(cli: &Cli) -> Result<Plan, String> {
    let mut demos = Vec::new();
    let mut held: Vec<Box<dyn Any>> = Vec::new();
    let mut specs = Vec::new();
    let mut brokers = vec![Broker::Embedded];
    match Mosquitto::start() {
        Ok(_) => brokers.push(Broker::Mosquitto),
        Err(e) => println!("(no mosquitto phases: {e})"),
    }
    let spec = |name: &'static str, door: Door, mode| Spec { name, door, mode };
    for broker in brokers {
        let full = pair(broker, &cli.sample_ratio.to_string())?;
        let tenth = pair(broker, "0.1")?;
        let responder = Responder::start(&full.broker)?;
        // The floor's clients connect to the broker: its process is the one measured first
        // (the gate process, for the embedded broker).
        let broker_pid = full
            .mosquitto
            .as_ref()
            .map_or(full.gate.pid(), Mosquitto::pid);
        let bare = Door::parse(&full.broker, Kind::Tcp, Some(broker_pid))?
            .measuring("responder", responder.pid());
        let names: [&'static str; 5] = match broker {
            Broker::Embedded => [
                "emb-bare",
                "emb-untraced",
                "emb-traced",
                "emb-10%-base",
                "emb-10%",
            ],
            Broker::Mosquitto => [
                "mosq-bare",
                "mosq-untraced",
                "mosq-traced",
                "mosq-10%-base",
                "mosq-10%",
            ],
        };
        specs.push(spec(names[0], bare, Mode::Bare));
        specs.push(spec(names[1], full.door()?, Mode::Anonymous));
        specs.push(spec(names[2], full.door()?, Mode::LoggedIn));
        specs.push(spec(names[3], tenth.door()?, Mode::Anonymous));
        specs.push(spec(names[4], tenth.door()?, Mode::LoggedIn));
        println!(
            "{} processes: gate {} and modules {} (100 %), gate {} and modules {} (10 %), \
             bare responder {}{}",
            broker.prefix(),
            full.gate.pid(),
            full.modules.pid(),
            tenth.gate.pid(),
            tenth.modules.pid(),
            responder.pid(),
            full.mosquitto
                .as_ref()
                .map_or(String::new(), |m| format!(", mosquitto {}", m.pid()))
        );
        held.push(Box::new(responder));
        for p in [full, tenth] {
            demos.extend([p.gate, p.modules]);
            if let Some(m) = p.mosquitto {
                held.push(Box::new(m));
            }
        }
    }
    let one = DemoProcess::start(&["--sample-ratio", &cli.sample_ratio.to_string()])?;
    specs.push(spec(
        "1-process",
        Door::parse(&one.gate, Kind::Tcp, Some(one.pid()))?,
        Mode::Anonymous,
    ));
    demos.push(one);
    Ok(Plan {
        _demos: demos,
        _cert: None,
        _held: held,
        specs,
    })
}

/// Prints, per broker, the split against its floor and traced against untraced, and the CPU
/// time per request of all processes but the load client.
pub fn print(plan: &Plan, mut all: Vec<Medians>) {
    let index = |name: &str| plan.specs.iter().position(|s| s.name == name);
    let mut per_s = |name: &str| index(name).and_then(|i| median(&mut all[i].per_s));
    let mut rows = Vec::new();
    for b in [Broker::Embedded, Broker::Mosquitto] {
        let p = b.prefix();
        let [bare, untraced, traced, base, tenth] =
            ["bare", "untraced", "traced", "10%-base", "10%"].map(|k| per_s(&format!("{p}-{k}")));
        let (Some(bare), Some(untraced)) = (bare, untraced) else {
            continue;
        };
        let mut line = format!(
            "{p}: split untraced/bare {:.2}x ({untraced:.0} against {bare:.0} req/s; target >= 0.65x)",
            untraced / bare
        );
        if let Some(t) = traced {
            line += &format!(
                ", traced 100 %/untraced {:.2}x (target >= 0.9x)",
                t / untraced
            );
        }
        if let (Some(t), Some(b)) = (tenth, base) {
            // Against the untraced requests of the same pair of processes.
            line += &format!(", 10 %/untraced {:.2}x (target >= 0.97x)", t / b);
        }
        rows.push(line);
    }
    for r in rows {
        println!("{r}");
    }
    if let (Some(one), Some(split)) = (per_s("1-process"), per_s("emb-untraced")) {
        println!(
            "1-process untraced {one:.0} req/s; split (embedded) untraced/1-process {:.2}x",
            split / one
        );
    }
    println!("CPU per request, every process but the load client (median µs):");
    for (spec, m) in plan.specs.iter().zip(all.iter_mut()) {
        let first = median(&mut m.cpu_us);
        let mut parts = vec![];
        let first_name = match (spec.name.split('-').next(), spec.mode) {
            (Some("emb"), Mode::Bare) => "gate process (broker)",
            (Some("emb"), _) => "gate+broker",
            (Some("mosq"), Mode::Bare) => "mosquitto",
            (Some("1"), _) => "demo",
            _ => "gate",
        };
        if let Some(c) = first {
            parts.push((first_name.to_string(), c));
        }
        for (name, v) in m.also.iter_mut() {
            if let Some(c) = median(v) {
                parts.push((name.clone(), c));
            }
        }
        let thread = |n: &str| n == THREAD_COLLECTOR || n == THREAD_EXPORT;
        let total: f64 = parts
            .iter()
            .filter(|(n, _)| !thread(n))
            .map(|(_, c)| c)
            .sum();
        let list: Vec<String> = parts.iter().map(|(n, c)| format!("{n} {c:.1}")).collect();
        println!("  {:<14} {total:>6.1}  ({})", spec.name, list.join(", "));
    }
}
