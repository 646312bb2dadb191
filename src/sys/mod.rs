//! The operating system's interfaces, behind safe functions: the only module allowed
//! `unsafe` code (the crate denies it everywhere else).
//!
//! Where a well-kept crate already wraps a call safely we use it; `nix` is the one chosen
//! because the WebRTC stack already builds it, so it adds no crate to the build:
//!
//! * [`shm`]: `shm_open`/`shm_unlink` and `flock` (`nix`), `pread`/`pwrite`, `ftruncate`,
//!   `fstat`, `fchmod` (`std::fs::File` on the descriptor). Not the `shared_memory`
//!   crate: it does not expose the descriptor, and memsink's protocol is `flock` on it.
//!   Not mapped at all (see `memsink::shm`).
//! * [`udp`]: `sendmmsg` with UDP GSO, our own code over `libc`. `nix::sendmmsg` puts the
//!   same control messages on every message, so it cannot give each run its own segment
//!   size, and allocates per call. `quinn-udp` sends one run per `sendmsg` from one
//!   contiguous buffer (a copy per datagram); measured on loopback (sender CPU per
//!   datagram, 200 viewers) it costs the same for pictures of 2 packets and 10-25 % less
//!   for runs of 7-30, but its `UdpSocketState::new` turns on receive GRO and DF on the
//!   socket, whose receive side reads one datagram per `recv_from`: adopting it means
//!   adopting its receive path in the engine too. Worth measuring with the fan-out
//!   benchmark then.
//! * [`udp_recv`]: `recvmmsg` into reused buffers (`libc`; `nix::recvmmsg` ties its
//!   buffers' lifetime to its headers, which a receive loop keeping both cannot do).
//! * [`udp_registration`]: a UDP socket registered with tokio for reading or writing
//!   only (`AsyncFd::register_with_interest`, whose safety promise is kept here).
//! * [`ifaddrs`]: interface addresses (`nix::ifaddrs`).
//! * [`clock`]: `clock_gettime(CLOCK_MONOTONIC)` (`nix`).
//! * [`memory`]: `malloc_trim` (`libc`; glibc's own call, wrapped by no crate), to
//!   give the heap back after viewers leave.
//! * [`process`]: resource limits, `sysconf`, the effective uid (`nix`).
//! * [`openh264_log`]: openh264's log callback, a C function pointer handed through its
//!   raw API; the openh264 crate offers only "log to stderr or not".
//! * [`v4l2_m2m`]: the V4L2 memory-to-memory encoder's ioctls (multiplanar formats,
//!   buffers, controls) and the mapping of its buffers; the `v4l` crate's own wrappers
//!   cover single-planar capture only, so its `ioctl` and kernel structures are used.

pub mod clock;
pub mod ifaddrs;
pub mod memory;
pub mod openh264_log;
pub mod process;
pub mod shm;
#[cfg(target_os = "linux")]
pub mod udp;
#[cfg(target_os = "linux")]
pub mod udp_recv;
pub mod udp_registration;
pub mod v4l2_m2m;
