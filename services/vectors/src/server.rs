//! A Qdrant server or cluster, over gRPC (qdrant-client). The collection is
//! created with the right size and distance and keyword payload indexes on
//! the ACL fields; sharding and replication are the cluster's own.

use std::collections::BTreeMap;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    AcornSearchParamsBuilder, Condition, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FacetCountsBuilder,
    FieldType, Filter, PointStruct, SearchParamsBuilder, SearchPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder, facet_value,
};
use qdrant_client::{Payload, Qdrant};

use sovra_auth::fields;

use crate::{
    ACORN_MAX_SELECTIVITY, DOC_VERSION, DocState, KEYWORD_FIELDS, VectorError, VectorHit,
    VectorPoint, VectorQuery, VectorStore, fold_doc_versions, payload, point_uuid,
};

/// How a new collection is laid out on a Qdrant cluster (0: server default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterLayout {
    pub shards: u32,
    pub replication_factor: u32,
}

pub struct ServerStore {
    pub(crate) client: Qdrant,
    collection: String,
}

fn err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> VectorError {
    VectorError::Store(e.into())
}

impl ServerStore {
    /// Connects and creates the collection (with its payload indexes) when absent.
    pub async fn connect(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        dimensions: usize,
        layout: ClusterLayout,
    ) -> Result<Self, VectorError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .skip_compatibility_check()
            .build()
            .map_err(err)?;
        if !client.collection_exists(collection).await.map_err(err)? {
            client
                .create_collection({
                    let mut b = CreateCollectionBuilder::new(collection).vectors_config(
                        VectorParamsBuilder::new(dimensions as u64, Distance::Cosine),
                    );
                    if layout.shards > 0 {
                        b = b.shard_number(layout.shards);
                    }
                    if layout.replication_factor > 0 {
                        b = b.replication_factor(layout.replication_factor);
                    }
                    b
                })
                .await
                .map_err(err)?;
        }
        // Every keyword index, on a new collection and on one made by an
        // older version (creating an existing index is accepted).
        for field in KEYWORD_FIELDS {
            client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(collection, field, FieldType::Keyword)
                        .wait(true),
                )
                .await
                .map_err(err)?;
        }
        Ok(Self {
            client,
            collection: collection.to_owned(),
        })
    }
}

fn acl_filter(q: &VectorQuery) -> Filter {
    let scope = q.scope();
    let mut who = vec![Condition::matches(
        fields::ACL_USERS,
        scope.subject().to_owned(),
    )];
    if !scope.groups().is_empty() {
        who.push(Condition::matches(
            fields::ACL_GROUPS,
            scope.groups().to_vec(),
        ));
    }
    let mut must = vec![
        Condition::matches(fields::TENANT, scope.tenant().to_owned()),
        Filter::should(who).into(),
    ];
    for (k, v) in &q.metadata {
        must.push(Condition::matches(format!("meta.{k}"), v.clone()));
    }
    Filter::must(must)
}

#[async_trait]
impl VectorStore for ServerStore {
    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        // A point without its payload would escape every ACL filter: a
        // payload that cannot be built fails the write instead.
        let list: Vec<PointStruct> = points
            .iter()
            .map(|p| {
                let payload = Payload::try_from(payload(p))
                    .map_err(|e| err(format!("payload of chunk {}: {e}", p.chunk_id)))?;
                Ok(PointStruct::new(
                    point_uuid(&p.tenant, &p.chunk_id).to_string(),
                    p.vector.clone(),
                    payload,
                ))
            })
            .collect::<Result<_, VectorError>>()?;
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, list).wait(true))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn delete_document(&self, tenant: &str, document_id: &str) -> Result<(), VectorError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(Filter::must([
                        Condition::matches(fields::TENANT, tenant.to_owned()),
                        Condition::matches("document_id", document_id.to_owned()),
                    ]))
                    .wait(true),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn search(&self, q: &VectorQuery) -> Result<Vec<VectorHit>, VectorError> {
        let response = self
            .client
            .search_points(
                SearchPointsBuilder::new(&self.collection, q.vector.clone(), q.top_k.max(1) as u64)
                    .filter(acl_filter(q))
                    // ACORN for narrow ACL filters, as the embedded store (edge.rs).
                    .params(SearchParamsBuilder::default().acorn(
                        AcornSearchParamsBuilder::new(true).max_selectivity(ACORN_MAX_SELECTIVITY),
                    ))
                    .with_payload(true),
            )
            .await
            .map_err(err)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                let text = |k: &str| {
                    p.payload
                        .get(k)
                        .and_then(|v| v.as_str())
                        .map(|s| s.to_string())
                };
                Some(VectorHit {
                    chunk_id: text("chunk_id")?,
                    document_id: text("document_id")?,
                    score: p.score,
                })
            })
            .collect())
    }

    async fn document_counts(&self) -> Result<BTreeMap<(String, String), DocState>, VectorError> {
        fn keywords(hits: Vec<qdrant_client::qdrant::FacetHit>) -> Vec<(String, usize)> {
            hits.into_iter()
                .filter_map(|h| match h.value.and_then(|v| v.variant) {
                    Some(facet_value::Variant::StringValue(s)) => Some((s, h.count as usize)),
                    _ => None,
                })
                .collect()
        }
        // Tenants first, then each tenant's documents.
        let tenants = self
            .client
            .facet(
                FacetCountsBuilder::new(&self.collection, fields::TENANT)
                    .limit(u64::MAX / 2)
                    .exact(true),
            )
            .await
            .map_err(err)?;
        let mut out = BTreeMap::new();
        for (tenant, _) in keywords(tenants.hits).into_iter().filter(|(_, n)| *n > 0) {
            let documents = self
                .client
                .facet(
                    FacetCountsBuilder::new(&self.collection, DOC_VERSION)
                        .filter(Filter::must([Condition::matches(
                            fields::TENANT,
                            tenant.clone(),
                        )]))
                        .limit(u64::MAX / 2)
                        .exact(true),
                )
                .await
                .map_err(err)?;
            // A server may still list a deleted document's value with a
            // count of 0 until its index is compacted: that is no document.
            fold_doc_versions(&tenant, keywords(documents.hits), &mut out);
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "qdrant"
    }
}
