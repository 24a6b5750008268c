//! What a DPoP proof costs a proxied call (`bench/run` prints it; the target is < 15 µs of
//! CPU per call). `bench_dpop [calls]` makes that many proofs of one session key for a
//! realistic access token and upstream URL, the way `proxy::dpop::attach` does on every
//! call (proof, `Authorization: DPoP` and `DPoP` header values), and prints the thread's CPU
//! time per call: `dpop_attach_cpu_us=<µs> calls=<n>`; and, beside it, what the ES256
//! signature alone costs on this machine (`ring`, the same call, a signing input of the
//! proof's size): `es256_sign_cpu_us=<µs>`, the floor of any proof.

use gatehouse::dpop::DpopKey;
use secrecy::SecretString;

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let (key, _) = DpopKey::generate().expect("a key");
    // A JWT access token of the usual size (about 900 bytes).
    let token = SecretString::from(format!("eyJ{}", "x".repeat(900)));
    let htu = "https://orders.internal/v1/orders/42";
    let mut headers = http::HeaderMap::new();
    // Warm-up: the first signatures fill caches and the allocator's pools.
    for _ in 0..1_000 {
        gatehouse::proxy::dpop::attach(&mut headers, &token, &key, "GET", htu, None);
    }
    let started = thread_cpu_ns();
    for _ in 0..calls {
        let attached =
            gatehouse::proxy::dpop::attach(&mut headers, &token, &key, "GET", htu, Some("n-1"));
        assert!(attached);
    }
    let per_call_us = (thread_cpu_ns() - started) as f64 / f64::from(calls) / 1000.0;

    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("a key");
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
    let proof = headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .expect("a proof");
    let signing_input = proof.rsplit_once('.').expect("a JWS").0.as_bytes().to_vec();
    for _ in 0..1_000 {
        std::hint::black_box(pair.sign(&rng, &signing_input).expect("signed"));
    }
    let started = thread_cpu_ns();
    for _ in 0..calls {
        std::hint::black_box(pair.sign(&rng, &signing_input).expect("signed"));
    }
    let sign_us = (thread_cpu_ns() - started) as f64 / f64::from(calls) / 1000.0;
    println!("dpop_attach_cpu_us={per_call_us:.2} es256_sign_cpu_us={sign_us:.2} calls={calls}");
}
