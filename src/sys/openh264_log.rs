//! openh264 prints its messages straight to stderr (`[OpenH264] this = 0x..., Warning:
//! ...`), bypassing the log's format and filter. This hands them to `tracing` instead:
//! errors as warnings, the rest at debug (its warnings are about parameters chosen on
//! purpose, such as bitrate control with frame skipping off).

use std::ffi::{c_char, c_int, c_void, CStr};

use openh264::encoder::Encoder;

// From openh264's codec_app_def.h (ENCODER_OPTION and the WELS_LOG levels).
const ENCODER_OPTION_TRACE_LEVEL: c_int = 25;
const ENCODER_OPTION_TRACE_CALLBACK: c_int = 26;
const WELS_LOG_ERROR: c_int = 1;
const WELS_LOG_WARNING: c_int = 2;

type TraceCallback = unsafe extern "C" fn(*mut c_void, c_int, *const c_char);

/// The callback openh264 calls with each message.
///
/// # Safety
///
/// `message` is null or a NUL-terminated string that stays valid for the call, which is
/// what openh264's `WelsTraceCallback` contract gives.
unsafe extern "C" fn trace(_ctx: *mut c_void, level: c_int, message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: not null (checked above), and NUL-terminated and alive for this call by
    // the function's contract.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    // Drop openh264's own prefix ("[OpenH264] this = 0x..., Warning:").
    let text = text
        .split_once(", ")
        .filter(|(head, _)| head.starts_with("[OpenH264]"))
        .map_or(&*text, |(_, rest)| rest)
        .trim_end();
    if level <= WELS_LOG_ERROR {
        tracing::warn!("openh264: {text}");
    } else {
        tracing::debug!("openh264: {text}");
    }
}

/// Route `encoder`'s messages through `tracing`. Call before its first picture: the
/// parameter checks that warn run when it is initialised on the first encode.
pub fn route_encoder_log(encoder: &mut Encoder) {
    let mut callback: TraceCallback = trace;
    let mut level = WELS_LOG_WARNING;
    // SAFETY: `raw_api` asks that no parameter the Rust encoder relies on is changed;
    // the trace level and callback are not among them. Both options are accepted before
    // initialisation (openh264's SetOption exempts them from its initialised check),
    // read the value pointed to during the call and keep a copy, so pointers to these
    // locals suffice; `trace` has the signature of WelsTraceCallback.
    unsafe {
        let raw = encoder.raw_api();
        raw.set_option(
            ENCODER_OPTION_TRACE_CALLBACK,
            (&raw mut callback).cast::<c_void>(),
        );
        raw.set_option(
            ENCODER_OPTION_TRACE_LEVEL,
            (&raw mut level).cast::<c_void>(),
        );
    }
}
