//! The Windows service, to the same pattern as the systemd unit and the launchd plist: the
//! Service Control Manager starts `veil.exe service run --state-dir DIR` as LocalSystem at
//! boot; `veil service run` notices it was started by the SCM (the dispatcher connects) and
//! runs the same daemon ([`super::serve`]) until the SCM says stop. Started from a console,
//! the dispatcher cannot connect and the daemon runs in the foreground instead.
//!
//! Only the service plumbing is here; what the daemon does is shared with Unix.

use super::{serve, Service};
use crate::args::{ServiceInstallArgs, ServiceRunArgs};
use crate::error::CliError;
use crate::logging::{self, LogRing};
use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::broadcast;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// The service's name in the SCM.
pub const SERVICE_NAME: &str = "Veil";
const DISPLAY_NAME: &str = "Veil overlay network";
/// Win32 error: the process was not started by the SCM.
const NOT_UNDER_SCM: i32 = 1063;

/// What `service_main` runs with: the dispatcher calls it through a bare function pointer.
static RUN_ARGS: OnceLock<ServiceRunArgs> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// `veil service run` on Windows: under the SCM when it started us, else in the console.
pub fn run(args: &ServiceRunArgs) -> Result<(), CliError> {
    let _ = RUN_ARGS.set(args.clone());
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => Ok(()),
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(NOT_UNDER_SCM) => {
            match RUN_ARGS.get() {
                Some(args) => super::run_console(args),
                None => Err(CliError::Usage("the service's arguments are missing")),
            }
        }
        Err(e) => Err(CliError::Mismatch(format!(
            "the Service Control Manager refused the service: {e}"
        ))),
    }
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = run_service() {
        eprintln!("veil: {e}");
    }
}

fn run_service() -> Result<(), CliError> {
    let args = RUN_ARGS
        .get()
        .ok_or(CliError::Usage("the service's arguments are missing"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = std::sync::Mutex::new(Some(stop_tx));
    let scm = |e: windows_service::Error| CliError::Mismatch(format!("service control: {e}"));
    let status = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(tx) = stop_tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(scm)?;
    let set = |state, accept| {
        status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(0),
            checkpoint: 0,
            wait_hint: Duration::from_secs(15),
            process_id: None,
        })
    };
    set(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
    )
    .map_err(scm)?;
    let settings = crate::up::settings_from(
        crate::config::Source::flags(crate::config::Layer::default()),
        args.config.as_deref(),
    )?;
    let (events, _) = broadcast::channel(1024);
    let logs = LogRing::new(veil_ipc::MAX_LOG_LINES, events.clone());
    logging::init_with_ring(&settings.log, logs.clone());
    veil_io::state::ensure_dir(&args.state_dir)?;
    let service = Service::new(args, events, logs);
    let result = crate::runtime()?.block_on(serve(service, async {
        let _ = stop_rx.await;
    }));
    set(ServiceState::Stopped, ServiceControlAccept::empty()).map_err(scm)?;
    result
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, CliError> {
    ServiceManager::local_computer(None::<&str>, access).map_err(|e| {
        CliError::Mismatch(format!(
            "cannot open the Service Control Manager ({e}): run it from an elevated prompt"
        ))
    })
}

/// `veil service install` on Windows.
pub fn install(args: &ServiceInstallArgs) -> Result<(), CliError> {
    let bin = std::env::current_exe()
        .map_err(|e| CliError::Mismatch(format!("cannot find this program's path: {e}")))?;
    let scm = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: bin,
        launch_arguments: vec![
            "service".into(),
            "run".into(),
            "--state-dir".into(),
            args.state_dir.clone().into_os_string(),
        ],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = scm
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .map_err(|e| {
            CliError::Mismatch(format!("cannot create the service {SERVICE_NAME}: {e}"))
        })?;
    let _ = service.set_description("The Veil node the desktop app controls");
    eprintln!("veil: installed the service {SERVICE_NAME}");
    if !args.no_start {
        service
            .start::<&str>(&[])
            .map_err(|e| CliError::Mismatch(format!("cannot start {SERVICE_NAME}: {e}")))?;
        eprintln!("veil: started {SERVICE_NAME}");
    }
    Ok(())
}

/// `veil service uninstall` on Windows.
pub fn uninstall(args: &ServiceInstallArgs) -> Result<(), CliError> {
    let scm = manager(ServiceManagerAccess::CONNECT)?;
    let service = scm
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(|e| {
            CliError::Mismatch(format!("the service {SERVICE_NAME} is not installed ({e})"))
        })?;
    if !args.no_start {
        let _ = service.stop();
    }
    service
        .delete()
        .map_err(|e| CliError::Mismatch(format!("cannot remove {SERVICE_NAME}: {e}")))?;
    eprintln!(
        "veil: removed the service {SERVICE_NAME}; kept {}",
        args.state_dir.display()
    );
    Ok(())
}

/// What the SCM says.
pub fn manager_status() -> super::ManagerStatus {
    let query = || -> Option<String> {
        let scm = manager(ServiceManagerAccess::CONNECT).ok()?;
        let service = scm
            .open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS)
            .ok()?;
        let state = service.query_status().ok()?.current_state;
        Some(format!("{state:?}").to_lowercase())
    };
    let active = query();
    super::ManagerStatus {
        installed: active.is_some(),
        active,
    }
}
