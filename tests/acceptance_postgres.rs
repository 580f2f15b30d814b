//! The guide's acceptance test against a real PostgreSQL, through the real driver and a real
//! sshd: the example deployment `examples/acme-deployment` (acme-api on api-0, with a live
//! writer its lock scripts pause; bbr-acmedb on db-0, with pg_dump/psql scripts) is backed
//! up while the writer runs, its table dropped, and restored. See docs/acceptance.md.

mod acceptance;
mod common;

use acceptance::acme_postgres::AcmePostgres;

#[test]
fn the_acme_deployment_backs_up_and_restores_a_live_postgres_database() {
    acceptance::run(
        &acceptance::example("acme-deployment"),
        vec![Box::new(AcmePostgres::new())],
    );
}
