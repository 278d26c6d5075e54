//! The two OpenSSL DTLS calls the `openssl` crate does not wrap:
//! `DTLSv1_listen` (the stateless cookie exchange) and `DTLSv1_handle_timeout`
//! (retransmitting a lost handshake flight). This is the only unsafe code in
//! the crate; each block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long, c_void};

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;

// From <openssl/ssl.h> (OpenSSL 1.1 and 3.x): DTLSv1_handle_timeout is a macro
// over SSL_ctrl.
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

unsafe extern "C" {
    // int DTLSv1_listen(SSL *s, BIO_ADDR *client); in libssl, which
    // openssl-sys links.
    fn DTLSv1_listen(s: *mut openssl_sys::SSL, client: *mut c_void) -> c_int;
    // BIO_ADDR *BIO_ADDR_new(void); void BIO_ADDR_free(BIO_ADDR *); in libcrypto.
    fn BIO_ADDR_new() -> *mut c_void;
    fn BIO_ADDR_free(a: *mut c_void);
}

/// What `DTLSv1_listen` made of the datagram it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listen {
    /// A ClientHello with a valid cookie: the handshake may go on with this
    /// `Ssl` (OpenSSL buffered the ClientHello in it).
    Verified,
    /// No valid cookie: a HelloVerifyRequest was written (or the datagram was
    /// not a ClientHello); keep no state.
    NoCookie,
    /// A fatal error (not DTLS, a version we refuse).
    Failed,
}

/// Runs the stateless cookie exchange on a fresh `Ssl` whose read BIO holds
/// one datagram.
pub(crate) fn listen(ssl: &SslRef) -> Listen {
    // SAFETY: `ssl` is a live SSL object with its BIOs set (SslStream::new set
    // them); the caller owns the stream it belongs to, so nothing else uses
    // it during the call. The BIO_ADDR is allocated by
    // OpenSSL, written by DTLSv1_listen (which accepts any BIO: it does not
    // require a datagram BIO in OpenSSL >= 1.1.0 and buffers the ClientHello
    // record itself), and freed here; a null allocation is checked.
    unsafe {
        let addr = BIO_ADDR_new();
        if addr.is_null() {
            return Listen::Failed;
        }
        let r = DTLSv1_listen(ssl.as_ptr(), addr);
        BIO_ADDR_free(addr);
        match r {
            1.. => Listen::Verified,
            0 => Listen::NoCookie,
            _ => Listen::Failed,
        }
    }
}

/// Retransmits the handshake's last flight if its timer ran out (a no-op
/// otherwise, and after the handshake).
pub(crate) fn handle_timeout(ssl: &SslRef) {
    // SAFETY: `ssl` is a live SSL object; DTLS_CTRL_HANDLE_TIMEOUT takes no
    // argument (larg 0, parg NULL), as the DTLSv1_handle_timeout macro passes.
    let _: c_long = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
}
