//! Forwards the engine's `log` records to `java.util.logging`, so that what it
//! logs (connections, revocations, errors) reaches the application's logs.
//!
//! `rdmanio.NativeLog` installs it when the library loads, passing the level
//! of the JUL logger `rdmanio.native`; that level becomes `log`'s maximum, so a
//! record below it costs one comparison and no JNI call. A record goes to the
//! JUL logger named after its module (`rdmanio::media::shm` logs to
//! `rdmanio.native.media.shm`) through `NativeLog.publish`, from whatever
//! thread logs it (an engine thread is attached to the JVM for the call).
//! Records of other crates (the jni crate's own) are not forwarded:
//! forwarding them could recurse.

use std::sync::OnceLock;

use jni::objects::{Global, JClass, JString, JValue};
use jni::sys::jint;
use jni::{jni_sig, jni_str, Env, JavaVM};
use log::{LevelFilter, Log, Metadata, Record};

use super::export;

/// The target prefix of the engine's own records.
const OWN_TARGET: &str = "rdmanio";

struct JavaLogger {
    vm: JavaVM,
    /// `rdmanio.NativeLog`, held so that engine threads (whose class loader
    /// is the system one) find it.
    class: Global<JClass<'static>>,
}

static LOGGER: OnceLock<JavaLogger> = OnceLock::new();

/// `log`'s level for a level number from Java: 0 off, 1 error .. 5 trace.
fn level_filter(level: jint) -> LevelFilter {
    match level {
        i32::MIN..=0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// The JUL logger's name for a record's target: `rdmanio::a::b` -> `rdmanio.native.a.b`.
fn logger_name(target: &str) -> String {
    let module = target.strip_prefix(OWN_TARGET).unwrap_or(target).trim_start_matches("::");
    match module {
        "" => "rdmanio.native".to_string(),
        module => format!("rdmanio.native.{}", module.replace("::", ".")),
    }
}

impl Log for JavaLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target().starts_with(OWN_TARGET) && metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        // Scoped: an engine thread attached for good would be a non-daemon Java
        // thread that keeps the JVM from exiting; records are rare enough.
        let published = self.vm.attach_current_thread_for_scope(|env: &mut Env| -> jni::errors::Result<()> {
            let name = JString::from_str(env, logger_name(record.target()))?;
            let message = JString::from_str(env, &message)?;
            env.call_static_method(
                &self.class,
                jni_str!("publish"),
                jni_sig!("(Ljava/lang/String;ILjava/lang/String;)V"),
                &[JValue::Object(&name), JValue::Int(record.level() as jint), JValue::Object(&message)],
            )?;
            Ok(())
        });
        if let Err(err) = published {
            // Nowhere else to say it: the JVM is going or JUL threw.
            eprintln!("rdma-nio: a native log record was lost ({err}): {message}");
        }
    }

    fn flush(&self) {}
}

export! {
    /// Installs the forwarding logger (once per process; a second call only
    /// sets the level) with `level` as `log`'s maximum (see `level_filter`).
    fn Java_rdmanio_NativeLog_installLogger<'l>(env, level: jint) {
        if LOGGER.get().is_none() {
            // Found from this Java thread: through NativeLog's own class loader.
            let class = env.find_class(jni_str!("rdmanio/NativeLog"))?;
            let logger = JavaLogger { vm: env.get_java_vm()?, class: env.new_global_ref(&class)? };
            if LOGGER.set(logger).is_ok() {
                let logger = LOGGER.get().expect("set above");
                if let Err(err) = log::set_logger(logger) {
                    eprintln!("rdma-nio: native records stay unlogged: {err}");
                }
            }
        }
        log::set_max_level(level_filter(level));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_module_logs_to_its_own_logger() {
        assert_eq!(logger_name("rdmanio::media::shm"), "rdmanio.native.media.shm");
        assert_eq!(logger_name("rdmanio"), "rdmanio.native");
    }

    #[test]
    fn java_levels_map_onto_logs() {
        assert_eq!(level_filter(0), LevelFilter::Off);
        assert_eq!(level_filter(2), LevelFilter::Warn);
        assert_eq!(level_filter(5), LevelFilter::Trace);
        assert_eq!(log::Level::Warn as jint, 2, "NativeLog.publish reads log's level numbers");
    }
}
