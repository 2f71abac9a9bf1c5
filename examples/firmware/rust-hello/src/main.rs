//! rust-hello: the smallest Ajour example firmware in Rust.
//!
//! Runs on QEMU's `mps2-an385` (Cortex-M3). It prints exactly one line,
//! `AJOUR_FIRMWARE_VERSION=<version>`, through ARM semihosting and then asks
//! the host to exit with status 0.
//!
//! No external crates: the vector table, reset handler, panic handler and
//! semihosting calls are all written here, so the build needs only `core`.

#![no_std]
#![no_main]

use core::arch::asm;
use core::panic::PanicInfo;
use core::ptr;

/// The version stamped in at compile time (see `build.rs`).
const VERSION_LINE: &str = concat!(
    "AJOUR_FIRMWARE_VERSION=",
    env!("AJOUR_FIRMWARE_VERSION"),
    "\n\0"
);

// ---------------------------------------------------------------------------
// Semihosting
// ---------------------------------------------------------------------------

/// SYS_WRITE0: write a NUL-terminated string to the debug console.
const SYS_WRITE0: usize = 0x04;
/// SYS_EXIT_EXTENDED: stop, passing a reason and a sub-code (exit status).
const SYS_EXIT_EXTENDED: usize = 0x20;
/// ADP_Stopped_ApplicationExit: the application exited normally.
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;

/// Performs a semihosting call: `r0` = operation, `r1` = argument.
///
/// # Safety
/// `arg` must be valid for the operation `op`.
#[inline(always)]
unsafe fn semihosting_call(op: usize, arg: usize) -> usize {
    let ret: usize;
    // On Armv7-M (Thumb only) the semihosting trap is `bkpt 0xAB`.
    unsafe {
        asm!(
            "bkpt #0xab",
            inout("r0") op => ret,
            in("r1") arg,
            options(nostack, preserves_flags),
        );
    }
    ret
}

/// Writes `s`, which must end with a NUL byte, to the host console.
fn write0(s: &str) {
    debug_assert!(s.ends_with('\0'));
    // SAFETY: the string is NUL-terminated and lives for the whole call.
    unsafe {
        semihosting_call(SYS_WRITE0, s.as_ptr() as usize);
    }
}

/// Ends the program with exit status `code` (QEMU exits with it).
fn exit(code: u32) -> ! {
    let block: [usize; 2] = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    // SAFETY: SYS_EXIT_EXTENDED reads the two-word parameter block at r1.
    unsafe {
        semihosting_call(SYS_EXIT_EXTENDED, block.as_ptr() as usize);
    }
    // Without a semihosting host the call may return: just wait forever.
    loop {
        unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
    }
}

// ---------------------------------------------------------------------------
// Application
// ---------------------------------------------------------------------------

fn main() -> ! {
    write0(VERSION_LINE);
    exit(0)
}

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    write0("rust-hello: panic\n\0");
    exit(101)
}

// ---------------------------------------------------------------------------
// Start-up: reset handler and vector table
// ---------------------------------------------------------------------------

extern "C" {
    // Provided by link.x.
    static mut _sdata: u32;
    static mut _edata: u32;
    static _sidata: u32;
    static mut _sbss: u32;
    static mut _ebss: u32;
}

/// The reset handler: sets up RAM, then runs `main`.
///
/// # Safety
/// Only the hardware calls this, once, out of reset.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn Reset() -> ! {
    unsafe {
        // Zero .bss. Volatile writes so the compiler cannot turn the loops
        // into calls that might themselves rely on initialised memory.
        let mut dst = ptr::addr_of_mut!(_sbss);
        let end = ptr::addr_of_mut!(_ebss);
        while dst < end {
            ptr::write_volatile(dst, 0);
            dst = dst.add(1);
        }
        // Copy .data from flash to RAM.
        let mut dst = ptr::addr_of_mut!(_sdata);
        let end = ptr::addr_of_mut!(_edata);
        let mut src = ptr::addr_of!(_sidata);
        while dst < end {
            ptr::write_volatile(dst, ptr::read(src));
            dst = dst.add(1);
            src = src.add(1);
        }
    }
    main()
}

/// Any exception we do not expect: report it and fail.
unsafe extern "C" fn default_handler() -> ! {
    write0("rust-hello: unexpected exception\n\0");
    exit(1)
}

/// Entry 1 of the vector table (entry 0, the initial stack pointer, is
/// written by link.x).
#[unsafe(link_section = ".vector_table.reset_vector")]
#[unsafe(no_mangle)]
#[used]
pub static __RESET_VECTOR: unsafe extern "C" fn() -> ! = Reset;

/// Entries 2..=15: the Cortex-M3 system exceptions (`None` = reserved).
#[unsafe(link_section = ".vector_table.exceptions")]
#[unsafe(no_mangle)]
#[used]
pub static __EXCEPTIONS: [Option<unsafe extern "C" fn() -> !>; 14] = [
    Some(default_handler), // NMI
    Some(default_handler), // HardFault
    Some(default_handler), // MemManage
    Some(default_handler), // BusFault
    Some(default_handler), // UsageFault
    None,                  // reserved
    None,                  // reserved
    None,                  // reserved
    None,                  // reserved
    Some(default_handler), // SVCall
    Some(default_handler), // DebugMonitor
    None,                  // reserved
    Some(default_handler), // PendSV
    Some(default_handler), // SysTick
];
