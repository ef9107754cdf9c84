//! nftables scripts run in this process through libnftables (Debian's `libnftables1`, which
//! the `nft` command itself uses), loaded when first needed: a policy change costs the
//! netlink round trips, not a process start (~15 ms). Where the library cannot be loaded,
//! callers run the `nft` command.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{LazyLock, Mutex};

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;

/// One libnftables context; the library is not thread-safe, so it is used under a lock.
struct Nft {
    // Kept loaded as long as the context lives.
    _lib: libloading::Library,
    ctx: *mut c_void,
    run: RunCmd,
    error_buffer: GetBuffer,
}

// The context is only reached through the mutex below.
unsafe impl Send for Nft {}

static NFT: LazyLock<Option<Mutex<Nft>>> = LazyLock::new(|| match load() {
    Ok(nft) => Some(Mutex::new(nft)),
    Err(e) => {
        tracing::debug!(error = %e, "libnftables not loaded; running the nft command");
        None
    }
});

fn load() -> Result<Nft, libloading::Error> {
    // SAFETY: libnftables' constructor has no preconditions; the symbols' types are those
    // of <nftables/libnftables.h> (nftables 0.9 and later).
    unsafe {
        let lib = libloading::Library::new("libnftables.so.1")?;
        let new: CtxNew = *lib.get(b"nft_ctx_new\0")?;
        let buffer_output: CtxFn = *lib.get(b"nft_ctx_buffer_output\0")?;
        let buffer_error: CtxFn = *lib.get(b"nft_ctx_buffer_error\0")?;
        let run: RunCmd = *lib.get(b"nft_run_cmd_from_buffer\0")?;
        let error_buffer: GetBuffer = *lib.get(b"nft_ctx_get_error_buffer\0")?;
        // NFT_CTX_DEFAULT
        let ctx = new(0);
        if ctx.is_null() {
            return Err(libloading::Error::DlOpenUnknown);
        }
        // Output and errors into the context's buffers, not this process's stdout/stderr.
        buffer_output(ctx);
        buffer_error(ctx);
        Ok(Nft {
            _lib: lib,
            ctx,
            run,
            error_buffer,
        })
    }
}

/// Runs `script` as `nft -f` would: `None` when libnftables is not available (run the
/// command instead), else whether it applied, with nft's message when it did not.
pub fn run(script: &str) -> Option<Result<(), String>> {
    let nft = NFT.as_ref()?;
    let Ok(script) = CString::new(script) else {
        return Some(Err("the rules hold a NUL byte".into()));
    };
    let nft = match nft.lock() {
        Ok(n) => n,
        Err(poisoned) => poisoned.into_inner(),
    };
    // SAFETY: `ctx` came from nft_ctx_new and is used by one thread at a time (the lock);
    // `script` is a valid C string for the call; the error buffer is a C string owned by
    // the context, copied out before the lock is released.
    unsafe {
        let rc = (nft.run)(nft.ctx, script.as_ptr());
        let err = (nft.error_buffer)(nft.ctx);
        let message = if err.is_null() {
            String::new()
        } else {
            CStr::from_ptr(err).to_string_lossy().trim().to_string()
        };
        Some(if rc == 0 { Ok(()) } else { Err(message) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_a_script_in_process_and_reports_nfts_own_message() {
        let table = format!("berth_nft_lib_test_{}", std::process::id());
        let created = run(&format!(
            "table inet {table} {{\n  chain c {{ type filter hook forward priority 0; policy accept; }}\n}}\n"
        ))
        .expect("libnftables loads (Debian's libnftables1)");
        assert_eq!(created, Ok(()));
        let listed = std::process::Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .expect("nft");
        assert!(listed.status.success(), "the table exists");
        assert_eq!(run(&format!("delete table inet {table}\n")), Some(Ok(())));

        let err = run("table inet berth_nft_lib_bad {\n  chain c { no such words; }\n}\n")
            .expect("loaded")
            .expect_err("a malformed script is refused");
        assert!(err.contains("syntax error"), "{err}");
    }
}
