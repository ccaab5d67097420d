//! The backend conformance suite: what every [`Backend`] must do, whatever
//! runs behind it (STYLE: "the in-memory and Redis backends pass one
//! shared conformance test suite").
//!
//! This directory is a module of test helpers, not a test target. A test
//! file implements [`BackendHarness`] for each backend it runs and expands
//! [`conformance_tests!`] once with all of them, which makes every case a
//! module holding one `#[tokio::test]` per backend, named
//! `<case>::<backend>`:
//!
//! ```ignore
//! mod conformance;
//!
//! struct MemoryHarness { /* … */ }
//! impl conformance::BackendHarness for MemoryHarness { /* … */ }
//!
//! // Tests `w3_connect_and_disconnect_…::memory`, `a1_…::memory`, …
//! conformance::conformance_tests!(memory => MemoryHarness);
//! ```
//!
//! The list of cases is in that macro, once: every backend runs every
//! case (the embedded backend in `conformance_memory.rs`, Redis with one
//! and with four shards in `presence-aggregator`'s `redis_conformance.rs`).
//!
//! - [`cases`]: one `async fn` per case, named after the rule it proves.
//! - [`probe`]: the update stream with the W3 checks built in, session
//!   fixtures, and waits that end on an event or fail after [`DEADLINE`].
//!
//! Rules for cases: wait for events (updates on `subscribe()`), never for
//! time; where a read has no event (the cap count, status counts) poll it
//! with `presence_testkit::wait_until`. A case must not depend on what another case
//! did: each starts its own harness. Keep each case under about 2 s.
//!
//! [`Backend`]: presence_backend::Backend
//! [`DEADLINE`]: probe::DEADLINE

pub mod cases;
pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use presence_backend::Backend;

/// How a harness sets its backend up for the suite.
#[derive(Clone, Debug)]
pub struct HarnessConfig {
    /// D7: how long a device whose socket dropped shows `away`. Short, so
    /// the grace cases finish quickly; long enough that a step or two of
    /// the test fit inside it.
    pub disconnect_grace: Duration,
}

impl Default for HarnessConfig {
    fn default() -> Self {
        Self {
            disconnect_grace: Duration::from_millis(250),
        }
    }
}

/// One backend under test, with its durable data.
///
/// `stop` and `resume` simulate a process restart: everything that is not
/// durable (devices, connections, the update stream) goes, the durable
/// data (M3: chosen status, text, expiry, calendar claims, preferences,
/// profiles, settings, custom statuses, the cap's enabled flag) stays.
/// `stop` is a graceful stop (the memory backend's `shutdown`, a Redis
/// node's SIGTERM drain): cases disconnect their devices before a restart
/// unless the device going away is the point.
pub trait BackendHarness: Sized {
    /// Starts a backend on empty durable data.
    async fn start_with(config: HarnessConfig) -> Self;

    /// Starts a backend on empty durable data with the default config.
    async fn start() -> Self {
        Self::start_with(HarnessConfig::default()).await
    }

    /// The running backend. Call again after a restart: the old one is
    /// gone. Panics while stopped.
    fn backend(&self) -> Arc<dyn Backend>;

    /// Stops the backend, keeping the durable data.
    async fn stop(&mut self);

    /// Starts a new backend on the durable data `stop` kept.
    async fn resume(&mut self);

    /// A process restart: [`stop`](Self::stop), then
    /// [`resume`](Self::resume). Must take well under a second (the T6
    /// restart case sets a 1 s expiry before it).
    async fn restart(&mut self) {
        self.stop().await;
        self.resume().await;
    }
}

/// Expands to a module per conformance case named after the case, holding
/// one `#[tokio::test]` per backend given, named after the backend, e.g.
/// `conformance::conformance_tests!(redis_1_shard => OneShard,
/// redis_4_shards => FourShards);` makes `a4_the_best_device_state_wins::
/// redis_1_shard` and `…::redis_4_shards`.
///
/// This is the one list of cases: a case added to `cases.rs` and not
/// listed here fails the build (`dead_code` under `-D warnings`), and
/// every backend runs every case listed. Harness types are named as seen
/// from the module that expands the macro.
macro_rules! conformance_tests {
    ($($backend:ident => $harness:ty),+ $(,)?) => {
        $crate::conformance::conformance_tests!(@cases [$($backend => $harness),+];
            // W3, A1–A4, M1, M2
            w3_connect_and_disconnect_publish_strictly_increasing_versions,
            a1_without_devices_a_user_is_offline_and_keeps_the_choice,
            a2_manual_busy_and_away_beat_every_device_state,
            a3_invisible_is_offline_to_others_and_invisible_to_self,
            a4_the_best_device_state_wins,
            m1_m2_manual_status_suspends_devices_and_online_resumes_them,
            self_state_updates_go_out_for_own_changes,
            // D1–D8
            d1_reconnect_starts_online_even_if_the_device_was_idle,
            d2_server_idle_timer_makes_the_device_away_and_activity_brings_it_back,
            d3_d5_lock_sleep_and_background_apply_even_without_auto_away,
            d6_sleep_then_lost_connection_goes_offline_after_the_grace,
            d7_lost_socket_is_away_for_the_grace_then_offline,
            d7_clean_close_is_offline_at_once,
            d7_reconnect_inside_the_grace_resumes_the_device,
            d7_late_disconnect_of_a_replaced_socket_is_ignored,
            // M3, W3 and T6 across restarts
            m3_status_text_and_preferences_survive_a_restart,
            m3_custom_status_selection_survives_a_restart,
            w3_versions_after_a_restart_exceed_every_version_before,
            t6_expiry_restores_the_previous_status,
            t6_expiry_survives_a_restart,
            t6_expiry_that_passed_while_stopped_applies_at_start,
            // S1, T5, I2
            s1_settings_round_trip_are_published_and_survive_a_restart,
            s1_turning_default_auto_away_off_makes_an_idle_device_online,
            s1_own_preferences_beat_workspace_defaults,
            t5_disabled_free_text_still_allows_custom_statuses,
            i2_disabling_invisible_keeps_users_already_invisible,
            // C1–C3
            c1_custom_status_crud_with_case_insensitive_unique_names,
            c2_selecting_a_custom_status_sets_presence_and_text,
            c3_renaming_and_remapping_updates_users_and_deleting_keeps_the_text,
            // X1–X5
            x1_x5_cap_state_counts_sockets_and_tracks_the_peak,
            x1_cap_zero_is_unlimited_and_lowering_the_cap_below_the_count_disables,
            x2_x3_exceeding_the_cap_disables_the_broadcast_and_reads_keep_working,
            x4_reenable_is_refused_until_the_count_is_below_the_cap,
            x4_the_broadcast_never_reenables_itself_not_even_across_a_restart,
            // K1, K2
            k2_calendar_busy_then_restore,
            k2_overlapping_events_keep_busy_until_the_last_ends,
            k2_a_choice_during_the_event_stands,
            k2_calendar_claims_survive_a_restart,
            // Reads
            unknown_users_are_offline_at_version_zero,
            list_not_offline_lists_visible_users_with_their_profiles,
            list_changed_since_lists_users_changed_at_or_after_the_time,
            user_by_username_follows_profile_changes_and_restarts,
            r3_stored_profiles_are_put_whole_merged_from_tokens_and_survive_a_restart,
            a3_status_counts_do_not_count_invisible_users_online,
            // Errors
            rule_errors_surface_as_rule_errors_with_stable_codes,
        );
    };
    (@cases $backends:tt; $($case:ident),* $(,)?) => {
        $(
            $crate::conformance::conformance_tests!(@case $case $backends);
        )*
    };
    (@case $case:ident [$($backend:ident => $harness:ty),+]) => {
        mod $case {
            #[allow(unused_imports)] // The harness types, whatever their names.
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    $crate::conformance::cases::$case::<$harness>().await;
                }
            )+
        }
    };
}

pub(crate) use conformance_tests;
