//! What stands in on Windows for root and for Unix file modes: whether this process runs
//! elevated (an administrator's token, which creating a Wintun adapter needs), and access
//! control lists that leave a file or directory to its owner, SYSTEM and Administrators (what
//! modes 0600 and 0700 give the node key, tokens and the state directory elsewhere).

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SetNamedSecurityInfoW, SDDL_REVISION_1,
    SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    GetSecurityDescriptorDacl, GetTokenInformation, TokenElevation, ACL, DACL_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, TOKEN_ELEVATION, TOKEN_QUERY,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Full access for the owner, SYSTEM and Administrators, nothing inherited from the parent
/// (`P`), and passed on to what is created inside (`OICI`).
const PRIVATE_DIR: &str = "D:P(A;OICI;FA;;;OW)(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";
/// The same for a file (inheritance flags mean nothing there).
const PRIVATE_FILE: &str = "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;BA)";

/// Whether this process runs with an elevated token ("Run as administrator").
pub fn is_elevated() -> bool {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing; `token` is a
    // valid place for the handle OpenProcessToken writes.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return false;
    }
    let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut len = 0u32;
    // SAFETY: `token` is open with TOKEN_QUERY; the buffer is a TOKEN_ELEVATION and its size
    // is passed alongside; `len` is a valid out-pointer.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenElevation,
            std::ptr::from_mut(&mut elevation).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        )
    };
    // SAFETY: `token` was opened above and is closed exactly once.
    unsafe { CloseHandle(token) };
    ok != 0 && elevation.TokenIsElevated != 0
}

/// Leaves the directory `path` (and what is later created in it) to its owner, SYSTEM and
/// Administrators.
pub fn restrict_dir(path: &Path) -> io::Result<()> {
    set_dacl(path, PRIVATE_DIR)
}

/// Leaves the file `path` to its owner, SYSTEM and Administrators.
pub fn restrict_file(path: &Path) -> io::Result<()> {
    set_dacl(path, PRIVATE_FILE)
}

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

fn set_dacl(path: &Path, sddl: &str) -> io::Result<()> {
    let sddl = wide(OsStr::new(sddl));
    let target = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated UTF-16; `sd` is a valid out-pointer; the size
    // out-pointer may be null.
    let made = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if made == 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut present, mut defaulted) = (0, 0);
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` is the descriptor made above; the out-pointers are valid locals. The DACL
    // pointer points into `sd`, which lives until the LocalFree below.
    let got = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
    let result = if got == 0 || present == 0 || dacl.is_null() {
        Err(io::Error::other(
            "no access control list in the security descriptor",
        ))
    } else {
        // SAFETY: `target` is NUL-terminated UTF-16; `dacl` is valid (see above); owner,
        // group and SACL are not changed (null). PROTECTED drops what the parent passes on.
        let rc = unsafe {
            SetNamedSecurityInfoW(
                target.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc as i32))
        }
    };
    // SAFETY: `sd` was allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW
    // (LocalAlloc), is no longer used, and is freed exactly once.
    unsafe { LocalFree(sd) };
    result
}
