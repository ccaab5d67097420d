//! The commands of a shard's stream, applied to its engine: a user's
//! commands (on the user's shard), the admin commands (shard 0, which owns
//! the workspace settings, custom statuses and cap), and the shard-wide
//! ones (any shard). Each answers with what the gateway waits for.

use presence_core::{Command, PreferencesUpdate, PresenceError, Timestamp};
use presence_protocol::cluster::{
    AdminCommand, ClusterCommand, CommandError, CommandOk, INVALID_COMMAND, ShardCommand,
    StoredSelf, UserCommand, WRONG_SHARD, shard_of,
};

use crate::ShardState;

impl ShardState {
    /// Applies one stream command; `entry_node` is the node that appended
    /// it.
    pub(crate) fn apply_command(
        &mut self,
        user: &str,
        command: ClusterCommand,
        entry_node: &str,
        now: Timestamp,
        wants_reply: bool,
    ) -> Result<CommandOk, CommandError> {
        match command {
            ClusterCommand::User(command) => {
                self.apply_user(user, command, entry_node, now, wants_reply)
            }
            ClusterCommand::Admin(command) => self.apply_admin(command, now),
            ClusterCommand::Shard(command) => Ok(self.apply_shard_wide(command, now)),
        }
    }

    /// [`ShardCommand::NodeStarted`] and [`ShardCommand::Sync`] (which
    /// only needs an answer: entries are applied in order).
    fn apply_shard_wide(&mut self, command: ShardCommand, now: Timestamp) -> CommandOk {
        if let ShardCommand::NodeStarted { node } = command {
            // The devices of its previous run are gone (logged by the
            // engine when there are any).
            self.engine.expire_nodes(&[node], now);
        }
        CommandOk::default()
    }

    pub(crate) fn apply_user(
        &mut self,
        user: &str,
        command: UserCommand,
        entry_node: &str,
        now: Timestamp,
        wants_reply: bool,
    ) -> Result<CommandOk, CommandError> {
        if user.is_empty() {
            return Err(CommandError {
                code: INVALID_COMMAND.to_owned(),
                message: "the stream entry names no user".to_owned(),
            });
        }
        let owner_shard = shard_of(user, self.config.shards);
        if owner_shard != self.config.shard {
            tracing::warn!(user, owner_shard, "a command for another shard's user");
            return Err(CommandError {
                code: WRONG_SHARD.to_owned(),
                message: format!(
                    "user belongs to shard {owner_shard}, not {}",
                    self.config.shard
                ),
            });
        }
        let engine = &mut self.engine;
        let result = match command {
            UserCommand::Connect {
                device,
                platform,
                conn,
                node,
                profile,
            } => engine.connect(user, device, platform, (&node, conn), &profile, now),
            UserCommand::DeviceEvent { device, event } => {
                engine.apply(user, Command::DeviceEvent { device, event }, now)
            }
            // Connection ids are per node: the entry's node and `conn`
            // must both match the device's socket.
            UserCommand::Disconnect { device, conn, end } => {
                engine.disconnect(user, device, (entry_node, conn), end, now)
            }
            UserCommand::SetStatus { request } => {
                engine.apply(user, Command::SetStatus(request), now)
            }
            UserCommand::UseCustomStatus { id } => engine.use_custom_status(user, &id, now),
            UserCommand::Calendar {
                event_id,
                busy,
                source,
            } => engine.apply(
                user,
                Command::Calendar {
                    event_id,
                    busy,
                    source,
                },
                now,
            ),
            UserCommand::SetPreferences {
                auto_away,
                idle_time_limit,
            } => engine.apply(
                user,
                Command::SetPreferences(PreferencesUpdate {
                    auto_away,
                    idle_time_limit,
                }),
                now,
            ),
            UserCommand::TouchProfile { profile } => {
                engine.touch_profile(user, &profile);
                Ok(())
            }
            UserCommand::PutProfile { profile } => {
                engine.put_profile(user, &profile);
                Ok(())
            }
        };
        result.map_err(|e| CommandError::from(&e))?;
        Ok(CommandOk {
            me: wants_reply.then(|| StoredSelf {
                version: engine.version(user).unwrap_or_default(),
                view: engine.self_view(user).unwrap_or_else(|| {
                    presence_core::UserPresence::default().self_view(engine.settings())
                }),
            }),
            ..CommandOk::default()
        })
    }

    fn apply_admin(
        &mut self,
        command: AdminCommand,
        now: Timestamp,
    ) -> Result<CommandOk, CommandError> {
        if self.config.shard != 0 {
            return Err(CommandError {
                code: WRONG_SHARD.to_owned(),
                message: format!(
                    "'{}' is handled by shard 0, not {}",
                    command.kind(),
                    self.config.shard
                ),
            });
        }
        let rule = |e: PresenceError| CommandError::from(&e);
        let engine = &mut self.engine;
        match command {
            AdminCommand::UpdateSettings { patch } => {
                let settings = engine.update_settings(&patch, now);
                Ok(CommandOk {
                    settings: Some(settings),
                    cap: engine.cap(),
                    ..CommandOk::default()
                })
            }
            AdminCommand::CreateCustomStatus {
                id,
                name,
                status_type,
            } => engine
                .create_custom_status(id, name, status_type, now)
                .map(custom_ok)
                .map_err(rule),
            AdminCommand::UpdateCustomStatus {
                id,
                name,
                status_type,
            } => engine
                .update_custom_status(&id, name, status_type, now)
                .map(custom_ok)
                .map_err(rule),
            AdminCommand::DeleteCustomStatus { id } => engine
                .delete_custom_status(&id, now)
                .map(custom_ok)
                .map_err(rule),
            AdminCommand::EnableBroadcast => Ok(CommandOk {
                cap: engine.enable_broadcast().map_err(rule)?,
                ..CommandOk::default()
            }),
        }
    }
}

fn custom_ok(status: presence_core::CustomStatus) -> CommandOk {
    CommandOk {
        custom_status: Some(status),
        ..CommandOk::default()
    }
}
