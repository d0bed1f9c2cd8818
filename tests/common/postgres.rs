//! A database of its own for each test, created on the PostgreSQL that runs on the machine
//! (127.0.0.1:5432, trust auth) and dropped when the test is done with it.
//!
//! `TEST_POSTGRES_URL` names the server's maintenance database if it is elsewhere; by default
//! `postgres://postgres@127.0.0.1:5432/postgres`. A server that cannot be reached fails the test
//! loudly: these tests never skip.
#![allow(dead_code)]

use sqlx::{Connection, PgConnection};

/// Where the maintenance database is, unless `TEST_POSTGRES_URL` says otherwise.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists as long as this value does.
pub struct TestDb {
    /// Its name, `claude_gateway_test_<random>`.
    pub name: String,
    admin: String,
}

fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

impl TestDb {
    /// Creates an empty database.
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let name = format!("claude_gateway_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must run at {admin} for these tests (set TEST_POSTGRES_URL): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("the test database is created");
        let _ = conn.close().await;
        TestDb { name, admin }
    }

    /// Its URL, as `DATABASE_URL`.
    pub fn url(&self) -> String {
        match self.admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{}", self.name),
            None => panic!("TEST_POSTGRES_URL must end in /DATABASE"),
        }
    }

    /// The same database through another `host:port` (a proxy standing in for the network).
    pub fn url_via(&self, addr: &str) -> String {
        let url = self.url();
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (user, rest) = rest.split_once('@').expect("a user in the URL");
        let (_, path) = rest.split_once('/').expect("a database in the URL");
        format!("{scheme}://{user}@{addr}/{path}")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime's reach: a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
