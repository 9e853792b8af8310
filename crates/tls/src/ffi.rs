//! The few libssl functions that the `openssl` crate does not bind, each
//! behind a safe function.
//!
//! Why: RFC 7672 DANE is done by OpenSSL's own DANE engine (RFC 7671
//! semantics, as Postfix and Exim use it), and the `openssl` crate has no
//! binding for it. The functions are declared here against the system libssl
//! 3.0 that `openssl-sys` already links; their prototypes are those of
//! `<openssl/ssl.h>` and `<openssl/x509_vfy.h>`.
//!
//! Safety, once for the whole module: every wrapper takes a Rust reference to
//! an `openssl` crate object (`SslRef`, `SslContextBuilder`, `SslCipherRef`,
//! `X509StoreContextRef`), whose `as_ptr()` is a valid, non-null pointer for
//! the life of that borrow. Strings handed to C are `CString`s alive across
//! the call; strings and buffers handed back by C are copied before the borrow
//! of their owner ends. No pointer returned by C is kept.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_uchar, c_ulong};
use std::ptr;

use foreign_types_shared::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{SslCipherRef, SslContextBuilder, SslRef};
use openssl::x509::store::X509StoreRef;
use openssl::x509::verify::X509VerifyParamRef;
use openssl::x509::{X509Ref, X509StoreContextRef};
use openssl_sys as sys;

unsafe extern "C" {
    fn SSL_CTX_dane_enable(ctx: *mut sys::SSL_CTX) -> c_int;
    fn SSL_dane_enable(ssl: *mut sys::SSL, basedomain: *const c_char) -> c_int;
    fn SSL_add1_host(ssl: *mut sys::SSL, hostname: *const c_char) -> c_int;
    fn SSL_dane_set_flags(ssl: *mut sys::SSL, flags: c_ulong) -> c_ulong;
    fn SSL_dane_tlsa_add(
        ssl: *mut sys::SSL,
        usage: u8,
        selector: u8,
        mtype: u8,
        data: *const c_uchar,
        dlen: usize,
    ) -> c_int;
    fn SSL_get0_dane_authority(
        ssl: *mut sys::SSL,
        mcert: *mut *mut sys::X509,
        mspki: *mut *mut sys::EVP_PKEY,
    ) -> c_int;
    fn SSL_get0_dane_tlsa(
        ssl: *mut sys::SSL,
        usage: *mut u8,
        selector: *mut u8,
        mtype: *mut u8,
        data: *mut *const c_uchar,
        dlen: *mut usize,
    ) -> c_int;
    fn SSL_group_to_name(ssl: *mut sys::SSL, id: c_int) -> *const c_char;
    fn SSL_CIPHER_get_kx_nid(cipher: *const sys::SSL_CIPHER) -> c_int;
    fn SSL_CIPHER_is_aead(cipher: *const sys::SSL_CIPHER) -> c_int;
    fn X509_STORE_CTX_get0_param(ctx: *mut sys::X509_STORE_CTX) -> *mut sys::X509_VERIFY_PARAM;
}

/// `DANE_FLAG_NO_DANE_EE_NAMECHECKS` (`<openssl/x509_vfy.h>`): a DANE-EE(3)
/// match authenticates the peer without any name check (RFC 7672 §3.1.1).
const DANE_FLAG_NO_DANE_EE_NAMECHECKS: c_ulong = 1;

/// `SSL_CTRL_GET_NEGOTIATED_GROUP` (`<openssl/ssl.h>`); the
/// `SSL_get_negotiated_group` macro expands to `SSL_ctrl` with it.
const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;

/// `NID_kx_rsa` (`<openssl/obj_mac.h>`): RSA key transport.
pub(crate) const NID_KX_RSA: c_int = 1037;
/// `NID_kx_dhe` (`<openssl/obj_mac.h>`): finite-field ephemeral DH (TLS 1.2).
pub(crate) const NID_KX_DHE: c_int = 1039;

/// What `SSL_dane_tlsa_add` made of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsaAdd {
    /// The record takes part in matching.
    Added,
    /// OpenSSL found it unusable (return 0): for example full-certificate or
    /// full-key data that does not parse, or an unsupported parameter.
    Unusable,
}

/// Enables DANE on a context: installs the default digests for matching types
/// 1 (SHA2-256) and 2 (SHA2-512). Must be called once, before connections are
/// made from the context.
pub(crate) fn ctx_dane_enable(ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    // Safety: see the module docs; the builder owns a valid SSL_CTX.
    let rc = unsafe { SSL_CTX_dane_enable(ctx.as_ptr()) };
    if rc <= 0 {
        Err(ErrorStack::get())
    } else {
        Ok(())
    }
}

/// Enables DANE on one connection, with `base_domain` as the TLSA base domain
/// and first reference identifier (RFC 7671 §7), switches DANE-EE(3) name
/// checks off (RFC 7672 §3.1.1) and adds each of `extra_names` as a further
/// reference identifier for DANE-TA(2) (RFC 7672 §3.2.2).
///
/// Must be called before the handshake, on a connection whose context went
/// through [`ctx_dane_enable`].
pub(crate) fn ssl_dane_enable(
    ssl: &mut SslRef,
    base_domain: &CStr,
    extra_names: &[&CStr],
) -> Result<(), ErrorStack> {
    // Safety: see the module docs; OpenSSL copies the name.
    let rc = unsafe { SSL_dane_enable(ssl.as_ptr(), base_domain.as_ptr()) };
    if rc <= 0 {
        return Err(ErrorStack::get());
    }
    // Safety: see the module docs. The return value is the previous flags.
    unsafe { SSL_dane_set_flags(ssl.as_ptr(), DANE_FLAG_NO_DANE_EE_NAMECHECKS) };
    for name in extra_names {
        // Safety: see the module docs; OpenSSL copies the name.
        let rc = unsafe { SSL_add1_host(ssl.as_ptr(), name.as_ptr()) };
        if rc <= 0 {
            return Err(ErrorStack::get());
        }
    }
    Ok(())
}

/// Adds one TLSA record to a connection on which [`ssl_dane_enable`]
/// succeeded. `Err` is an internal OpenSSL failure (return -1).
pub(crate) fn ssl_dane_tlsa_add(
    ssl: &mut SslRef,
    usage: u8,
    selector: u8,
    matching: u8,
    data: &[u8],
) -> Result<TlsaAdd, ErrorStack> {
    // Safety: see the module docs; OpenSSL copies `data` (`dlen` bytes).
    let rc = unsafe {
        SSL_dane_tlsa_add(
            ssl.as_ptr(),
            usage,
            selector,
            matching,
            data.as_ptr(),
            data.len(),
        )
    };
    match rc {
        1.. => Ok(TlsaAdd::Added),
        0 => {
            // OpenSSL queues a reason for the rejected record; it is reported
            // through `TlsaAdd::Unusable`, so drop it from the thread's queue.
            let _ = ErrorStack::get();
            Ok(TlsaAdd::Unusable)
        }
        _ => Err(ErrorStack::get()),
    }
}

/// Which TLSA record authenticated the peer, from a completed handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DaneMatch {
    /// Depth of the matched certificate, 0 for the server's own. A
    /// DANE-TA(2) bare public key (2 1 0) that the server did not send counts
    /// as one past the top certificate it signed: OpenSSL itself reports
    /// the depth of that signed certificate, which would read like a match
    /// of the certificate itself.
    pub(crate) depth: u32,
    pub(crate) usage: u8,
    pub(crate) selector: u8,
    pub(crate) matching: u8,
    pub(crate) data: Vec<u8>,
}

/// The TLSA record that authenticated the peer after a completed handshake;
/// `None` when DANE was not enabled, verification failed, or no TLSA record
/// matched.
pub(crate) fn ssl_dane_match(ssl: &SslRef) -> Option<DaneMatch> {
    let mut mcert: *mut sys::X509 = ptr::null_mut();
    let mut mspki: *mut sys::EVP_PKEY = ptr::null_mut();
    // Safety: see the module docs; the out-pointers point at locals and
    // receive borrowed ("get0") pointers that are only tested for NULL.
    let depth = unsafe { SSL_get0_dane_authority(ssl.as_ptr(), &mut mcert, &mut mspki) };
    let depth = u32::try_from(depth).ok()?;
    let bare_key = mcert.is_null() && !mspki.is_null();
    let (mut usage, mut selector, mut matching) = (0u8, 0u8, 0u8);
    let mut data: *const c_uchar = ptr::null();
    let mut dlen: usize = 0;
    // Safety: see the module docs; the out-pointers point at locals. `data`
    // points into the SSL's matched record, valid while `ssl` is borrowed;
    // it is copied below.
    let rc = unsafe {
        SSL_get0_dane_tlsa(
            ssl.as_ptr(),
            &mut usage,
            &mut selector,
            &mut matching,
            &mut data,
            &mut dlen,
        )
    };
    if rc < 0 || data.is_null() {
        return None;
    }
    // Safety: OpenSSL returned `data` with `dlen` bytes, see above.
    let data = unsafe { std::slice::from_raw_parts(data, dlen) }.to_vec();
    let depth = if bare_key {
        depth.saturating_add(1)
    } else {
        depth
    };
    Some(DaneMatch {
        depth,
        usage,
        selector,
        matching,
        data,
    })
}

/// The key-exchange group of the connection (`SSL_get_negotiated_group` and
/// `SSL_group_to_name`): `X25519`, `secp256r1`, `ffdhe2048`…, `None` when no
/// named group was used (RSA key transport, TLS 1.2 finite-field DHE).
pub(crate) fn negotiated_group(ssl: &SslRef) -> Option<String> {
    // Safety: see the module docs; this control takes no argument.
    let id = unsafe {
        sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_GET_NEGOTIATED_GROUP,
            0,
            ptr::null_mut(),
        )
    };
    if id <= 0 {
        return None;
    }
    let id = c_int::try_from(id).ok()?;
    // Safety: see the module docs. The name is static data of the library
    // (or NULL for a group libssl does not know); it is copied at once.
    let name = unsafe { SSL_group_to_name(ssl.as_ptr(), id) };
    if name.is_null() {
        // TLSEXT_nid_unknown | code point, for groups libssl cannot name.
        return Some(format!("group 0x{:04x}", id & 0xffff));
    }
    // Safety: non-null, NUL-terminated C string from libssl.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    // libssl names groups as the IANA registry does (`x25519`, `secp256r1`);
    // the curves of RFC 7748 are written `X25519`/`X448` everywhere else
    // (OpenSSL's object names, Postfix's logs), so follow that.
    Some(match &*name {
        "x25519" => String::from("X25519"),
        "x448" => String::from("X448"),
        other => other.to_owned(),
    })
}

/// The key-exchange NID of a cipher suite (`NID_kx_rsa`, `NID_kx_ecdhe`,
/// `NID_kx_any` for TLS 1.3 …).
pub(crate) fn cipher_kx_nid(cipher: &SslCipherRef) -> c_int {
    // Safety: see the module docs.
    unsafe { SSL_CIPHER_get_kx_nid(cipher.as_ptr()) }
}

/// Whether a cipher suite is AEAD (GCM, CCM, ChaCha20-Poly1305) rather than
/// MAC-then-encrypt CBC, RC4 or NULL.
pub(crate) fn cipher_is_aead(cipher: &SslCipherRef) -> bool {
    // Safety: see the module docs.
    unsafe { SSL_CIPHER_is_aead(cipher.as_ptr()) != 0 }
}

/// The verification parameters of an initialised store context, to set the
/// expected host name and purpose before `verify_cert`.
/// `None` only for a context that was not initialised.
pub(crate) fn store_ctx_param_mut(
    ctx: &mut X509StoreContextRef,
) -> Option<&mut X509VerifyParamRef> {
    // Safety: see the module docs.
    let param = unsafe { X509_STORE_CTX_get0_param(ctx.as_ptr()) };
    if param.is_null() {
        return None;
    }
    // Safety: non-null; the param object is owned by the context and lives
    // as long as it, and the returned reference carries the context's
    // mutable borrow, so nothing else can reach it meanwhile.
    Some(unsafe { X509VerifyParamRef::from_ptr_mut(param) })
}

/// Adds a trusted certificate to a store that is already in use.
///
/// `X509_STORE_add_cert` takes the store's own lock and a reference to the
/// certificate, so it may run while other threads verify against the same
/// store; a certificate already in the store is not an error.
pub(crate) fn store_add_cert(store: &X509StoreRef, cert: &X509Ref) -> Result<(), ErrorStack> {
    // Safety: see the module docs; OpenSSL serialises changes to the store
    // with its lock, and up-refs the certificate it keeps.
    let rc = unsafe { sys::X509_STORE_add_cert(store.as_ptr(), cert.as_ptr()) };
    if rc <= 0 {
        Err(ErrorStack::get())
    } else {
        Ok(())
    }
}
