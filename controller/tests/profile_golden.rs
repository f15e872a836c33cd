//! Baseline profiles of the committed fixture data are deterministic: they must equal the
//! committed golden files byte for byte. After an intended change to the profile format, run
//! with `EDGEFLEET_BLESS=1` to rewrite the golden files, and review the diff.

use std::path::PathBuf;

use edgefleet_controller::analytics::dataset::Dataset;
use edgefleet_controller::analytics::profile::ProfileOptions;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

fn check_golden(csv: &str) {
    let data = Dataset::from_csv(std::fs::File::open(testdata().join(csv)).expect("open")).expect("csv");
    let json = edgefleet_controller::analytics::profile::baseline(&data, &ProfileOptions::default()).to_json();
    assert_eq!(
        json,
        edgefleet_controller::analytics::profile::baseline(&data, &ProfileOptions::default()).to_json(),
        "same run twice"
    );
    let golden = testdata().join(csv.replace(".csv", ".profile.json"));
    if std::env::var_os("EDGEFLEET_BLESS").is_some() {
        std::fs::write(&golden, &json).expect("bless");
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (run with EDGEFLEET_BLESS=1 to create)");
    assert!(json == want, "profile of {csv} differs from {}", golden.display());
}

#[test]
fn iris_profile_matches_golden() {
    check_golden("iris_baseline.csv");
}

#[test]
fn breast_cancer_profile_matches_golden() {
    check_golden("breast_cancer_baseline.csv");
}

#[test]
fn npy_and_csv_of_the_same_data_give_the_same_profile() {
    let csv = Dataset::from_csv(std::fs::File::open(testdata().join("iris_baseline.csv")).expect("open")).expect("csv");
    let npy_bytes = std::fs::read(testdata().join("iris_baseline.npy")).expect("npy");
    let npy = Dataset::from_npy(&npy_bytes, Some(&csv.columns)).expect("npy");
    assert_eq!(npy, csv);
    let options = ProfileOptions::default();
    assert_eq!(
        edgefleet_controller::analytics::profile::baseline(&npy, &options),
        edgefleet_controller::analytics::profile::baseline(&csv, &options)
    );
}

#[test]
fn wrong_column_count_names_the_line() {
    let err = Dataset::from_csv("a,b\n1,2\n3\n".as_bytes()).expect_err("short row");
    assert_eq!(err.to_string(), "line 3: 1 fields, the header has 2");
    let err = Dataset::from_csv("a,b\n1,x\n".as_bytes()).expect_err("not a number");
    assert!(err.to_string().contains("column \"b\""), "{err}");
}

#[test]
fn iris_profile_has_the_documented_shape() {
    let data =
        Dataset::from_csv(std::fs::File::open(testdata().join("iris_baseline.csv")).expect("open")).expect("csv");
    let p = edgefleet_controller::analytics::profile::baseline(&data, &ProfileOptions::default());
    assert_eq!(p.rows, 150);
    assert_eq!(p.features.len(), 4);
    for f in &p.features {
        assert!(f.edges.len() <= 9 && f.edges.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
        assert_eq!(f.counts.len(), f.edges.len() + 1);
        assert_eq!(f.counts.iter().sum::<u64>(), 150);
    }
    assert_eq!(p.sample.rows.len(), 150, "fewer rows than the reservoir keeps them all");
}
