//! Integration tests run on PostgreSQL only when `GRANULO_TEST_POSTGRES_URL` is set at build
//! time; otherwise those variants are compiled as ignored (reported, never counted as passed).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(granulo_pg_tests)");
    println!("cargo::rerun-if-env-changed=GRANULO_TEST_POSTGRES_URL");
    if std::env::var_os("GRANULO_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=granulo_pg_tests");
    }
}
