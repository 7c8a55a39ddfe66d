//! lopper-energy: wrap-around, RAPL from a fake powercap folder, NVML absent, selection, reports.
use lopper_energy::*;
use std::fs;
use std::path::Path;

fn domain(dir: &Path, name: &str, energy: u64, max: u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    fs::write(dir.join("energy_uj"), format!("{energy}\n")).unwrap();
    fs::write(dir.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
}

#[test]
fn wrap_around_arithmetic() {
    assert_eq!(wrapping_delta(100, 350, 1000), 250);
    assert_eq!(wrapping_delta(900, 100, 1000), 200);
    assert_eq!(wrapping_delta(1000, 0, 1000), 0);
    assert_eq!(wrapping_delta(5, 5, 1000), 0);
    assert_eq!(wrapping_delta(u64::MAX - 1, 3, u64::MAX), 4);
}

#[test]
fn rapl_from_fake_powercap() {
    let root = tempfile::tempdir().unwrap();
    let pkg = root.path().join("intel-rapl:0");
    domain(
        &pkg,
        "package-0",
        262_143_000_000 - 1_000_000,
        262_143_000_000,
    );
    domain(&pkg.join("intel-rapl:0:0"), "core", 5, 1000);
    domain(
        &pkg.join("intel-rapl:0:1"),
        "dram",
        10_000_000,
        65_712_999_613,
    );
    let mut m = RaplMeter::open(root.path()).unwrap();
    let names: Vec<&str> = m.domains().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["package-0", "package-0/dram"]);
    m.start().unwrap();
    // package wraps: 1 J to the top, then 2.5 J past zero; dram adds 0.5 J
    fs::write(pkg.join("energy_uj"), "2500000").unwrap();
    fs::write(pkg.join("intel-rapl:0:1/energy_uj"), "10500000").unwrap();
    let meas = m.stop().unwrap();
    assert_eq!(meas.method, Method::Rapl);
    assert!((meas.parts[0].1 - 3.5).abs() < 1e-9, "{:?}", meas.parts);
    assert!((meas.parts[1].1 - 0.5).abs() < 1e-9, "{:?}", meas.parts);
    assert!((meas.joules - 4.0).abs() < 1e-9);
    assert!(m.stop().is_err(), "stop without start");

    // two wraps inside one window are seen when polled in between
    m.start().unwrap();
    let max = 262_143_000_000u64;
    fs::write(pkg.join("energy_uj"), format!("{}", max - 10)).unwrap();
    m.poll().unwrap();
    fs::write(pkg.join("energy_uj"), "10").unwrap();
    let meas = m.stop().unwrap();
    let want = (max - 10 - 2_500_000 + 20) as f64 / 1e6;
    assert!(
        (meas.parts[0].1 - want).abs() < 1e-6,
        "{} vs {want}",
        meas.parts[0].1
    );
}

#[test]
fn rapl_absent_and_malformed_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let e = RaplMeter::open(root.path()).err().unwrap().to_string();
    assert!(e.contains("no intel-rapl"), "{e}");
    let e = RaplMeter::open(Path::new("/nonexistent/powercap"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("RAPL unavailable"), "{e}");
    domain(&root.path().join("intel-rapl:0"), "package-0", 1, 10);
    fs::write(root.path().join("intel-rapl:0/energy_uj"), "lots").unwrap();
    let e = RaplMeter::open(root.path()).err().unwrap().to_string();
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn this_machine_rapl_state_is_reported_not_panicked() {
    // On the development VM there is no /sys/class/powercap: the error must say so.
    match RaplMeter::open(Path::new("/sys/class/powercap")) {
        Ok(m) => assert!(!m.domains().is_empty()),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains("RAPL"), "{s}");
        }
    }
}

#[test]
fn nvml_absent_is_an_error() {
    let e = NvmlMeter::open_with(Some(std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1")))
        .err()
        .expect("no NVML at a path that does not exist");
    let s = e.to_string();
    assert!(s.contains("NVML unavailable"), "{s}");
}

/// The CPU-time estimate was picked, after reasons why NVML (mentioning `nvml_why`) and RAPL were
/// not used, and the estimate's own line says ESTIMATE.
fn assert_estimate_after_nvml_and_rapl(sel: &Selection, nvml_why: &str) {
    assert_eq!(sel.method(), Method::EstimateCpuTime);
    assert_eq!(sel.reasons.len(), 3, "{:?}", sel.reasons);
    assert!(
        sel.reasons[0].starts_with("NVML not used") && sel.reasons[0].contains(nvml_why),
        "{:?}",
        sel.reasons
    );
    assert!(
        sel.reasons[1].starts_with("RAPL not used"),
        "{:?}",
        sel.reasons
    );
    assert!(sel.reasons[2].contains("ESTIMATE"), "{:?}", sel.reasons);
}

#[test]
fn best_available_says_why() {
    let sel = best_available_with(
        Some(std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1")),
        Path::new("/nonexistent/powercap"),
        EstimateMeter::cpu_time(10.0).unwrap(),
    );
    assert_estimate_after_nvml_and_rapl(&sel, "");

    // with a readable fake powercap, RAPL wins over the estimate
    let root = tempfile::tempdir().unwrap();
    domain(&root.path().join("intel-rapl:0"), "package-0", 1, 10);
    let sel = best_available_with(
        Some(std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1")),
        root.path(),
        EstimateMeter::cpu_time(10.0).unwrap(),
    );
    assert_eq!(sel.method(), Method::Rapl);
    assert!(sel.explain().contains("picked RAPL"));
}

#[test]
fn best_available_cpu_never_picks_nvml() {
    // no powercap: the estimate, with NVML's absence explained by where the work runs
    let sel = best_available_cpu_with(
        Path::new("/nonexistent/powercap"),
        EstimateMeter::cpu_time(10.0).unwrap(),
    );
    assert_estimate_after_nvml_and_rapl(&sel, "CPU");
    // a readable powercap: RAPL
    let root = tempfile::tempdir().unwrap();
    domain(&root.path().join("intel-rapl:0"), "package-0", 1, 10);
    let sel = best_available_cpu_with(root.path(), EstimateMeter::cpu_time(10.0).unwrap());
    assert_eq!(sel.method(), Method::Rapl);
    assert!(sel.explain().contains("picked RAPL"), "{}", sel.explain());
}

fn sample_report() -> EnergyReport {
    let mut r = EnergyReport::new(Factors {
        grid_g_co2_per_kwh: 400.0,
        price_per_kwh: 0.5,
        currency: "EUR".into(),
    });
    r.add_raw("train", 3.6e6, 1000.0, Method::Rapl);
    r.add_raw("eval", 7.2e5, 100.0, Method::Rapl);
    r.add_raw("train", 3.6e6, 800.0, Method::Rapl);
    r
}

#[test]
fn report_aggregation() {
    let r = sample_report();
    assert_eq!(r.phases.len(), 2);
    let t = r.phase("train").unwrap();
    assert_eq!(t.joules.value, 7.2e6);
    assert_eq!(t.kwh.value, 2.0);
    assert_eq!(t.seconds, 1800.0);
    assert_eq!(t.avg_watts.value, 4000.0);
    assert_eq!(t.co2_g.value, 800.0);
    assert_eq!(t.cost.value, 1.0);
    assert_eq!(t.cost.unit, "EUR");
    assert!((r.total.kwh.value - 2.2).abs() < 1e-12);
    assert!((r.total.co2_g.value - 880.0).abs() < 1e-9);
    assert_eq!(r.total.joules.method, Method::Rapl);

    let mut mixed = r.clone();
    mixed.add_raw("eval", 1.0, 1.0, Method::EstimateCpuTime);
    assert_eq!(mixed.phase("eval").unwrap().joules.method, Method::Mixed);
    assert_eq!(mixed.total.kwh.method, Method::Mixed);
    assert!(mixed.total.joules.method.is_estimate());
}

#[test]
fn json_and_csv_round_trip_and_golden_csv() {
    let r = sample_report();
    let back = EnergyReport::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    assert!(r.to_json().contains("\"method\": \"rapl\""));
    let csv = r.to_csv();
    assert_eq!(
        csv,
        "phase,seconds,joules,kwh,avg_watts,co2_g,cost,currency,method\n\
         train,1800,7200000,2,4000,800,1,EUR,rapl\n\
         eval,100,720000,0.2,7200,80,0.1,EUR,rapl\n\
         total,1900,7920000,2.2,4168.421052631579,880.0000000000001,1.1,EUR,rapl\n"
    );
    let back = EnergyReport::from_csv(&csv).unwrap();
    assert_eq!(back.phases.len(), 2);
    assert_eq!(back.phase("eval").unwrap().joules.value, 720000.0);
    assert!((back.factors.grid_g_co2_per_kwh - 400.0).abs() < 1e-9);
    assert!(EnergyReport::from_csv("bad header\n").is_err());
    assert!(EnergyReport::from_json("{}").is_err());

    let dir = tempfile::tempdir().unwrap();
    r.write_json(&dir.path().join("e.json")).unwrap();
    r.write_csv(&dir.path().join("e.csv")).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join("e.csv")).unwrap(), csv);
    // a write that fails (the target is a folder) is an error naming it and leaves no temp file
    let sub = tempfile::tempdir().unwrap();
    let target = sub.path().join("report.json");
    fs::create_dir(&target).unwrap();
    let e = r.write_json(&target).unwrap_err().to_string();
    assert!(e.contains("report.json"), "{e}");
    let left: Vec<_> = fs::read_dir(sub.path())
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("report.json")]);
}

#[test]
fn measurement_watts() {
    let m = Measurement {
        joules: 10.0,
        seconds: 4.0,
        method: Method::Nvml,
        parts: vec![],
        detail: String::new(),
    };
    assert_eq!(m.watts(), 2.5);
    assert!(!Method::Nvml.is_estimate());
    assert_eq!(
        Method::from_label("estimate-flops"),
        Some(Method::EstimateFlops)
    );
    assert!(Method::EstimateFlops.to_string().starts_with("estimate"));
}
