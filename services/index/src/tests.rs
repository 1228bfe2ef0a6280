use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use sovra_auth::{Acl, Principal};

use super::*;

fn principal(subject: &str, tenant: &str, groups: &[&str]) -> Principal {
    Principal {
        subject: subject.into(),
        tenant: tenant.into(),
        roles: Default::default(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn entry(doc: &str, ordinal: u32, tenant: &str, text: &str, acl: Acl) -> ChunkEntry {
    ChunkEntry {
        version: 1,
        document_id: doc.into(),
        chunk_id: format!("{doc}:{ordinal}:x"),
        ordinal,
        tenant: tenant.into(),
        title: format!("Title of {doc}"),
        text: text.into(),
        acl,
        metadata: BTreeMap::new(),
    }
}

fn groups(g: &[&str]) -> Acl {
    Acl {
        groups: g.iter().map(|s| s.to_string()).collect(),
        users: vec![],
    }
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.document_id.as_str()).collect()
}

#[test]
fn languages_stemming_and_segmentation() {
    let idx = LexicalIndex::in_ram().unwrap();
    let acl = groups(&["staff"]);
    idx.replace_document(
        "bank",
        "en",
        &[entry(
            "en",
            0,
            "bank",
            "Employees are entitled to annual leaves of twenty days.",
            acl.clone(),
        )],
    )
    .unwrap();
    idx.replace_document(
        "bank",
        "zh",
        &[entry(
            "zh",
            0,
            "bank",
            "员工每年享有十五天带薪年假，须提前两周申请。",
            acl.clone(),
        )],
    )
    .unwrap();
    idx.replace_document(
        "bank",
        "id",
        &[entry(
            "id",
            0,
            "bank",
            "Karyawan berhak atas cuti tahunan selama dua belas hari kerja.",
            acl.clone(),
        )],
    )
    .unwrap();
    let p = principal("u", "bank", &["staff"]);
    assert_eq!(
        ids(&idx
            .search(&SearchRequest::new(&p, "entitle leave", 10))
            .unwrap()),
        vec!["en"]
    );
    assert_eq!(
        ids(&idx.search(&SearchRequest::new(&p, "年假", 10)).unwrap()),
        vec!["zh"]
    );
    assert_eq!(
        ids(&idx
            .search(&SearchRequest::new(&p, "带薪年假申请", 10))
            .unwrap()),
        vec!["zh"]
    );
    assert_eq!(
        ids(&idx
            .search(&SearchRequest::new(&p, "cuti tahunan", 10))
            .unwrap()),
        vec!["id"]
    );
    let hit = &idx.search(&SearchRequest::new(&p, "annual", 10)).unwrap()[0];
    assert!(
        hit.snippet.contains("<mark>annual</mark>"),
        "{}",
        hit.snippet
    );
}

#[test]
fn acl_and_tenant_are_inside_the_query() {
    let idx = LexicalIndex::in_ram().unwrap();
    idx.replace_document(
        "bank",
        "a",
        &[entry(
            "a",
            0,
            "bank",
            "treasury limits policy",
            groups(&["treasury"]),
        )],
    )
    .unwrap();
    idx.replace_document(
        "bank",
        "b",
        &[entry(
            "b",
            0,
            "bank",
            "treasury limits for alice only",
            Acl {
                groups: vec![],
                users: vec!["alice".into()],
            },
        )],
    )
    .unwrap();
    idx.replace_document(
        "clinic",
        "c",
        &[entry(
            "c",
            0,
            "clinic",
            "treasury limits elsewhere",
            groups(&["treasury"]),
        )],
    )
    .unwrap();
    idx.replace_document(
        "bank",
        "d",
        &[entry(
            "d",
            0,
            "bank",
            "treasury limits nobody",
            Acl::default(),
        )],
    )
    .unwrap();
    let q = |p: &Principal| {
        let mut v = ids(&idx
            .search(&SearchRequest::new(p, "treasury limits", 10))
            .unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        v.sort();
        v
    };
    assert_eq!(q(&principal("bob", "bank", &["treasury"])), vec!["a"]);
    assert_eq!(q(&principal("alice", "bank", &[])), vec!["b"]);
    assert_eq!(
        q(&principal("alice", "bank", &["treasury"])),
        vec!["a", "b"]
    );
    assert_eq!(q(&principal("carol", "clinic", &["treasury"])), vec!["c"]);
    assert!(q(&principal("eve", "bank", &["risk"])).is_empty());
    // A subject named like a group gains nothing.
    assert!(q(&principal("treasury", "bank", &[])).is_empty());
}

#[test]
fn replace_delete_and_metadata_filters() {
    let idx = LexicalIndex::in_ram().unwrap();
    let acl = groups(&["g"]);
    let mut e1 = entry("doc", 0, "t", "first version about mortgages", acl.clone());
    e1.metadata.insert("department".into(), "lending".into());
    idx.replace_document(
        "t",
        "doc",
        &[
            e1.clone(),
            entry("doc", 1, "t", "second chunk about mortgages", acl.clone()),
        ],
    )
    .unwrap();
    let p = principal("u", "t", &["g"]);
    assert_eq!(
        idx.search(&SearchRequest::new(&p, "mortgages", 10))
            .unwrap()
            .len(),
        2
    );
    let mut req = SearchRequest::new(&p, "mortgages", 10);
    req.metadata.insert("department".into(), "lending".into());
    assert_eq!(idx.search(&req).unwrap().len(), 1);
    req.metadata.insert("department".into(), "risk".into());
    assert_eq!(idx.search(&req).unwrap().len(), 0);
    idx.replace_document(
        "t",
        "doc",
        &[entry("doc", 0, "t", "new version about loans", acl)],
    )
    .unwrap();
    assert!(
        idx.search(&SearchRequest::new(&p, "mortgages", 10))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        idx.search(&SearchRequest::new(&p, "loans", 10))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        idx.document_counts()
            .unwrap()
            .get(&("t".to_owned(), "doc".to_owned())),
        Some(&DocState {
            chunks: 1,
            version: Some(1)
        })
    );
    idx.delete_document("t", "doc").unwrap();
    assert!(
        idx.search(&SearchRequest::new(&p, "loans", 10))
            .unwrap()
            .is_empty()
    );
    assert_eq!(idx.num_chunks(), 0);
}

#[test]
fn survives_reopen_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = LexicalIndex::open(dir.path()).unwrap();
        idx.replace_document(
            "t",
            "x",
            &[entry("x", 0, "t", "persisted passage", groups(&["g"]))],
        )
        .unwrap();
    }
    let idx = LexicalIndex::open(dir.path()).unwrap();
    let p = principal("u", "t", &["g"]);
    assert_eq!(
        idx.search(&SearchRequest::new(&p, "persisted", 10))
            .unwrap()
            .len(),
        1
    );
}

// ---- Property: no result outside the caller's permissions ----

const SUBJECTS: [&str; 4] = ["ana", "budi", "chen", "dewi"];
const GROUPS: [&str; 5] = ["treasury", "risk", "nursing", "pharmacy", "hr"];
const TENANTS: [&str; 2] = ["bank", "hospital"];
const WORDS: [&str; 8] = [
    "policy",
    "leave",
    "limit",
    "dose",
    "audit",
    "年假",
    "cuti",
    "procedure",
];

struct Corpus {
    index: LexicalIndex,
    docs: Vec<(String, String, Acl)>, // id, tenant, acl
}

/// A fixed corpus of 300 chunks with pseudo-random ACLs, built once.
fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let index = LexicalIndex::in_ram().unwrap();
        let mut docs = Vec::new();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut batch = Vec::new();
        for i in 0..300 {
            let tenant = TENANTS[(next() % 2) as usize];
            let acl = Acl {
                groups: GROUPS
                    .iter()
                    .filter(|_| next() % 4 == 0)
                    .map(|s| s.to_string())
                    .collect(),
                users: SUBJECTS
                    .iter()
                    .filter(|_| next() % 6 == 0)
                    .map(|s| s.to_string())
                    .collect(),
            };
            let text: Vec<&str> = (0..6)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            let id = format!("d{i}");
            batch.push((
                id.clone(),
                vec![entry(&id, 0, tenant, &text.join(" "), acl.clone())],
            ));
            docs.push((id, tenant.to_owned(), acl));
        }
        let refs: Vec<(&str, &str, &[ChunkEntry])> = batch
            .iter()
            .map(|(id, c)| (c[0].tenant.as_str(), id.as_str(), c.as_slice()))
            .collect();
        index.replace_documents(&refs).unwrap();
        Corpus { index, docs }
    })
}

fn arb_principal() -> impl Strategy<Value = Principal> {
    (
        prop::sample::select(SUBJECTS.to_vec()),
        prop::sample::select(TENANTS.to_vec()),
        prop::sample::subsequence(GROUPS.to_vec(), 0..=GROUPS.len()),
    )
        .prop_map(|(s, t, g)| principal(s, t, &g))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn no_hit_outside_the_callers_permissions(
        p in arb_principal(),
        words in prop::sample::subsequence(WORDS.to_vec(), 1..=3),
    ) {
        let c = corpus();
        let query = words.join(" ");
        let hits = c.index.search(&SearchRequest::new(&p, &query, 1000)).unwrap();
        for h in &hits {
            let (_, tenant, acl) = c.docs.iter().find(|(id, _, _)| *id == h.document_id).unwrap();
            prop_assert!(p.may_see(tenant, acl), "{:?} saw {} ({tenant}, {:?})", p, h.document_id, acl);
        }
        // And nothing visible that matches is missing: the filter is exact, not lossy.
        let visible = c.docs.iter().filter(|(_, t, a)| p.may_see(t, a)).count();
        prop_assert!(hits.len() <= visible);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_acls_random_principals(
        acls in prop::collection::vec(
            (prop::sample::select(TENANTS.to_vec()),
             prop::sample::subsequence(GROUPS.to_vec(), 0..=2),
             prop::sample::subsequence(SUBJECTS.to_vec(), 0..=1)),
            1..20),
        principals in prop::collection::vec(arb_principal(), 1..20),
    ) {
        let idx = LexicalIndex::in_ram().unwrap();
        let docs: Vec<(String, String, Acl)> = acls.iter().enumerate().map(|(i, (t, g, u))| {
            (format!("d{i}"), t.to_string(), Acl { groups: g.iter().map(|s| s.to_string()).collect(), users: u.iter().map(|s| s.to_string()).collect() })
        }).collect();
        let batch: Vec<(String, Vec<ChunkEntry>)> = docs.iter().map(|(id, t, a)| (id.clone(), vec![entry(id, 0, t, "shared policy text", a.clone())])).collect();
        let refs: Vec<(&str, &str, &[ChunkEntry])> = batch.iter().map(|(id, c)| (c[0].tenant.as_str(), id.as_str(), c.as_slice())).collect();
        idx.replace_documents(&refs).unwrap();
        for p in &principals {
            let hits = idx.search(&SearchRequest::new(p, "policy", 100)).unwrap();
            let expected = docs.iter().filter(|(_, t, a)| p.may_see(t, a)).count();
            prop_assert_eq!(hits.len(), expected, "{:?}", p);
            for h in &hits {
                let (_, t, a) = docs.iter().find(|(id, _, _)| *id == h.document_id).unwrap();
                prop_assert!(p.may_see(t, a));
            }
        }
    }
}

/// jieba's search mode emits a compound's parts, then the compound, so
/// offsets step back; where a snippet fragment starts between them,
/// tantivy's snippet generator subtracted past zero and the search panicked.
#[test]
fn snippets_survive_offsets_that_step_back() {
    let idx = LexicalIndex::in_ram().unwrap();
    let acl = groups(&["g"]);
    let p = principal("u", "t", &["g"]);
    let filler = "天气很好我们去公园散步";
    for n in 0..40 {
        let text: String = filler.chars().cycle().take(60 + n).collect::<String>()
            + "中华人民共和国香港特别行政区立法会议员宣誓。";
        let id = format!("d{n}");
        idx.replace_document("t", &id, &[entry(&id, 0, "t", &text, acl.clone())])
            .unwrap();
    }
    let hits = idx
        .search(&SearchRequest::new(&p, "中华人民共和国立法会议员", 100))
        .unwrap();
    assert_eq!(hits.len(), 40);
    assert!(hits.iter().all(|h| h.snippet.contains("<mark>")));
}

#[test]
fn an_index_of_an_older_schema_is_emptied_and_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut b = tantivy::schema::Schema::builder();
        b.add_text_field(
            "document_id",
            tantivy::schema::STRING | tantivy::schema::STORED,
        );
        let old = tantivy::Index::create_in_dir(dir.path(), b.build()).unwrap();
        let mut w: tantivy::IndexWriter = old.writer_with_num_threads(1, 15_000_000).unwrap();
        w.add_document(tantivy::doc!()).unwrap();
        w.commit().unwrap();
    }
    let idx = LexicalIndex::open(dir.path()).unwrap();
    assert_eq!(idx.num_chunks(), 0);
    idx.replace_document(
        "t",
        "d",
        &[entry("d", 0, "t", "fresh text", groups(&["g"]))],
    )
    .unwrap();
    let p = principal("u", "t", &["g"]);
    assert_eq!(
        ids(&idx.search(&SearchRequest::new(&p, "fresh", 10)).unwrap()),
        vec!["d"]
    );
    drop(idx);
    // Reopened with the current schema, it keeps what it holds.
    assert_eq!(LexicalIndex::open(dir.path()).unwrap().num_chunks(), 1);
}

/// Candidates are the search's hits by id and score, read from fast fields
/// across segments, with the access rule inside the query as for `search`.
#[test]
fn candidates_match_the_search_by_id_and_score() {
    let idx = LexicalIndex::in_ram().unwrap();
    // One commit per document: several segments.
    for n in 0..12 {
        let id = format!("d{n}");
        let group = if n % 3 == 0 { "secret" } else { "staff" };
        let text = format!("liquidity ratio report {}", "liquidity ".repeat(n));
        idx.replace_document(
            "bank",
            &id,
            &[entry(&id, 0, "bank", &text, groups(&[group]))],
        )
        .unwrap();
    }
    let p = principal("u", "bank", &["staff"]);
    let req = SearchRequest::new(&p, "liquidity report", 100);
    let hits = idx.search(&req).unwrap();
    let candidates = idx.candidates(&req).unwrap();
    assert_eq!(hits.len(), 8, "the secret documents stay out");
    let pairs = |c: &[Candidate]| -> Vec<(String, String, f32)> {
        c.iter()
            .map(|c| (c.document_id.clone(), c.chunk_id.clone(), c.score))
            .collect()
    };
    let expected: Vec<(String, String, f32)> = hits
        .iter()
        .map(|h| (h.document_id.clone(), h.chunk_id.clone(), h.score))
        .collect();
    assert_eq!(pairs(&candidates), expected);
    assert!(
        candidates
            .iter()
            .all(|c| c.chunk_id == format!("{}:0:x", c.document_id))
    );
    // Another tenant sees nothing.
    let other = principal("u", "clinic", &["staff"]);
    assert!(
        idx.candidates(&SearchRequest::new(&other, "liquidity", 100))
            .unwrap()
            .is_empty()
    );
}

/// The highlighter marks the query's terms in any text, found by the index
/// or not, and a text holding none of them gets its plain opening.
#[test]
fn the_highlighter_marks_terms_in_any_text() {
    let idx = LexicalIndex::in_ram().unwrap();
    idx.replace_document(
        "bank",
        "a",
        &[entry(
            "a",
            0,
            "bank",
            "treasury approval limits",
            groups(&["g"]),
        )],
    )
    .unwrap();
    let h = idx.highlighter("treasury approval").unwrap();
    let marked = h.snippet("The <b>treasury</b> desk needs approval.");
    assert!(marked.contains("<mark>treasury</mark>"), "{marked}");
    assert!(marked.contains("<mark>approval</mark>"), "{marked}");
    assert!(
        marked.contains("&lt;b&gt;"),
        "the rest is escaped: {marked}"
    );
    let long = "No matching words & here. ".repeat(20);
    let plain = h.snippet(&long);
    assert_eq!(plain, plain_snippet(&long));
    assert!(plain.starts_with("No matching words &amp; here."));
    assert_eq!(
        plain.chars().count(),
        240 + 4 * 9,
        "the first 240 characters (nine &), escaped"
    );
}
