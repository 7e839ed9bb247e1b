//! The installed build says what it is, and scripts/test.sh leaves a release build of the
//! checkout installed (it sets ADMIN_TOOLKIT_EXPECT_PROFILE and ADMIN_TOOLKIT_EXPECT_COMMIT).

use admin_toolkit_it::Cluster;

#[test]
fn build_info_names_the_installed_build() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let row = db
        .query_one(
            "SELECT version, git_commit, build_profile, built_for FROM admin_toolkit.build_info()",
            &[],
        )
        .unwrap();
    let (version, commit, profile, built_for): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let extension_version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'admin_toolkit'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, extension_version);
    assert!(profile == "release" || profile == "debug", "{profile}");
    let major = admin_toolkit_it::server_major();
    assert!(
        built_for.starts_with(&format!("PostgreSQL {major}.")),
        "{built_for} loaded into a PostgreSQL {major} server"
    );
    if let Ok(expected) = std::env::var("ADMIN_TOOLKIT_EXPECT_PROFILE") {
        assert_eq!(
            profile, expected,
            "the installed admin_toolkit is a {profile} build"
        );
    }
    if let Ok(expected) = std::env::var("ADMIN_TOOLKIT_EXPECT_COMMIT") {
        assert!(
            commit.starts_with(&expected),
            "the installed build is of commit {commit}, the checkout is {expected}"
        );
    }
}
