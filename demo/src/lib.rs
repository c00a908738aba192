//! The mqant chat scenario on mqrs: the `Login` and `Chat` modules, the app that runs them with
//! the gate and the viewer, and an MQTT client for driving it.

pub mod chat;
pub mod client;
pub mod login;

use mqrs_runtime::{App, AppError, Config};

/// Builds the demo app: `Login` and `Chat` added, only logged-in users' requests traced.
pub fn build_app(config: Config) -> Result<App, AppError> {
    let app = App::new(config);
    app.add_module(login::Login::new(&app))?;
    app.add_module(chat::Chat::new(&app))?;
    // As in mqantserver: trace the requests of users who have logged in, not anonymous ones.
    app.set_on_request_tracing(|session, _publish| !session.is_guest());
    Ok(app)
}
