//! The mqant chat scenario on mqrs: the `Login` and `Chat` modules, the app that runs them with
//! the gate and the viewer (all in one process, or split over several that share a broker),
//! and an MQTT client for driving it.

pub mod chat;
pub mod client;
pub mod harness;
pub mod login;
pub mod raw;
pub mod web;

use mqrs_runtime::{App, AppError, Config};

/// Which parts of the demo run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// The client-facing MQTT gate.
    pub gate: bool,
    /// The `Login` module.
    pub login: bool,
    /// The `Chat` module.
    pub chat: bool,
}

impl Parts {
    /// Everything in one process.
    pub const ALL: Parts = Parts {
        gate: true,
        login: true,
        chat: true,
    };

    /// Reads a list such as `gate,chat`; the error names the unknown entry.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Parts, String> {
        let mut p = Parts {
            gate: false,
            login: false,
            chat: false,
        };
        for n in names {
            match n.as_ref().trim().to_ascii_lowercase().as_str() {
                "gate" => p.gate = true,
                "login" => p.login = true,
                "chat" => p.chat = true,
                "" => {}
                other => {
                    return Err(format!(
                        "unknown module `{other}`: the demo has gate, login and chat"
                    ))
                }
            }
        }
        if p == (Parts {
            gate: false,
            login: false,
            chat: false,
        }) {
            return Err("no module to run: name at least one of gate, login, chat".into());
        }
        Ok(p)
    }
}

/// Builds the demo app with every part: `Login` and `Chat` added, only logged-in users'
/// requests traced.
pub fn build_app(config: Config) -> Result<App, AppError> {
    build(config, Parts::ALL)
}

/// The demo's own settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Messages one connection may say per second (`Chat/HD_Say`).
    pub say_per_second: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            say_per_second: chat::SAY_PER_SECOND,
        }
    }
}

/// Builds the demo app with the given parts; the others are reached through the broker.
pub fn build(config: Config, parts: Parts) -> Result<App, AppError> {
    build_with(config, parts, Settings::default())
}

/// [`build`] with the demo's own settings.
pub fn build_with(mut config: Config, parts: Parts, settings: Settings) -> Result<App, AppError> {
    config.gate.enabled = config.gate.enabled && parts.gate;
    let mut b = App::builder().config(config);
    if parts.login {
        b = b.module(login::Login::new);
    }
    if parts.chat {
        b = b.module(move |app| chat::Chat::new(app).say_per_second(settings.say_per_second));
    }
    // As in mqantserver: trace the requests of users who have logged in, not anonymous ones.
    b.on_request_tracing(|session, _request| !session.is_guest())
        .build()
}
