//! qdrant-edge: Qdrant's engine in-process, one shard on local disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use qdrant_edge::{
    AcornSearchParams, Condition, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance,
    EdgeConfig, EdgeShard, EdgeVectorParams, FacetRequest, FacetValue, FacetValueHit,
    FieldCondition, FieldIndexOperations, Filter, JsonPath, Match, NamedQuery, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStruct, QueryEnum,
    SearchParams, SearchRequest, UpdateOperation, WithPayloadInterface,
};

use sovra_auth::fields;

use crate::{
    ACORN_MAX_SELECTIVITY, DOC_VERSION, DocState, EXACT_MAX_POINTS, KEYWORD_FIELDS, VectorError,
    VectorHit, VectorPoint, VectorQuery, VectorStore, fold_doc_versions, payload, point_uuid,
};

pub struct EdgeStore {
    shard: Arc<EdgeShard>,
}

fn err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> VectorError {
    VectorError::Store(e.into())
}

fn key(name: &str) -> Result<JsonPath, VectorError> {
    name.try_into()
        .map_err(|_| err(format!("bad payload key {name}")))
}

fn keyword(field: &str, value: &str) -> Result<Condition, VectorError> {
    Ok(Condition::Field(FieldCondition::new_match(
        key(field)?,
        Match::from(value.to_owned()),
    )))
}

fn any_of(field: &str, values: &[String]) -> Result<Condition, VectorError> {
    Ok(Condition::Field(FieldCondition::new_match(
        key(field)?,
        Match::from(values.to_vec()),
    )))
}

fn filter(must: Vec<Condition>, should: Vec<Condition>) -> Filter {
    Filter {
        must: (!must.is_empty()).then_some(must),
        should: (!should.is_empty()).then_some(should),
        min_should: None,
        must_not: None,
    }
}

/// tenant AND (acl_users = subject OR acl_groups ANY groups) AND metadata.
fn acl_filter(q: &VectorQuery) -> Result<Filter, VectorError> {
    let scope = q.scope();
    let mut who = vec![keyword(fields::ACL_USERS, scope.subject())?];
    if !scope.groups().is_empty() {
        who.push(any_of(fields::ACL_GROUPS, scope.groups())?);
    }
    let mut must = vec![
        keyword(fields::TENANT, scope.tenant())?,
        Condition::Filter(filter(Vec::new(), who)),
    ];
    for (k, v) in &q.metadata {
        must.push(keyword(&format!("meta.{k}"), v)?);
    }
    Ok(filter(must, Vec::new()))
}

impl EdgeStore {
    /// Opens the shard in `dir`, creating it (with its payload indexes) when absent.
    pub fn open(dir: &Path, dimensions: usize) -> Result<Self, VectorError> {
        let exists = dir.join("edge_config.json").exists()
            || dir
                .read_dir()
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
        std::fs::create_dir_all(dir).map_err(err)?;
        let shard = if exists {
            EdgeShard::load(dir, None).map_err(err)?
        } else {
            let config = EdgeConfig::builder()
                .on_disk_payload(true)
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParams::builder(dimensions, Distance::Cosine).build(),
                )
                .build();
            EdgeShard::new(dir, config).map_err(err)?
        };
        // Every keyword index, on a new shard and on one made by an older
        // version (a field added since is indexed now).
        for field in KEYWORD_FIELDS {
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name: key(field)?,
                        field_schema: Some(PayloadFieldSchema::FieldType(
                            PayloadSchemaType::Keyword,
                        )),
                    }),
                ))
                .map_err(err)?;
        }
        Ok(Self {
            shard: Arc::new(shard),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, VectorError> + Send + 'static,
    ) -> Result<T, VectorError> {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(VectorError::Task)?
    }
}

#[async_trait]
impl VectorStore for EdgeStore {
    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        self.replace_documents(&[], points).await
    }

    async fn delete_document(&self, tenant: &str, document_id: &str) -> Result<(), VectorError> {
        self.replace_documents(&[(tenant.to_owned(), document_id.to_owned())], Vec::new())
            .await
    }

    async fn replace_documents(
        &self,
        documents: &[(String, String)],
        points: Vec<VectorPoint>,
    ) -> Result<(), VectorError> {
        if documents.is_empty() && points.is_empty() {
            return Ok(());
        }
        let deletes = documents
            .iter()
            .map(|(tenant, id)| {
                Ok(filter(
                    vec![
                        keyword(fields::TENANT, tenant)?,
                        keyword("document_id", id)?,
                    ],
                    Vec::new(),
                ))
            })
            .collect::<Result<Vec<_>, VectorError>>()?;
        self.blocking(move |shard| {
            for f in deletes {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(f),
                    ))
                    .map_err(err)?;
            }
            if !points.is_empty() {
                let list = points
                    .iter()
                    .map(|p| {
                        PointStruct::new(
                            PointId::Uuid(point_uuid(&p.tenant, &p.chunk_id)),
                            p.vector.clone(),
                            payload(p),
                        )
                        .into()
                    })
                    .collect();
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::UpsertPoints(PointInsertOperations::PointsList(list)),
                    ))
                    .map_err(err)?;
            }
            // Once per batch: the write is durable when this returns.
            shard.flush();
            Ok(())
        })
        .await
    }

    async fn search(&self, q: &VectorQuery) -> Result<Vec<VectorHit>, VectorError> {
        let filter = acl_filter(q)?;
        let (vector, limit) = (q.vector.clone(), q.top_k.max(1));
        self.blocking(move |shard| {
            // Few admitted points: scored exactly (see EXACT_MAX_POINTS);
            // otherwise the graph, with ACORN when the filter admits few
            // of the points (see ACORN_MAX_SELECTIVITY).
            let admitted = shard
                .count(CountRequest {
                    filter: Some(filter.clone()),
                    exact: false,
                })
                .map_err(err)?;
            let request = SearchRequest {
                query: QueryEnum::Nearest(NamedQuery {
                    query: vector.into(),
                    using: None,
                }),
                filter: Some(filter),
                params: Some(SearchParams {
                    exact: admitted <= EXACT_MAX_POINTS,
                    acorn: Some(AcornSearchParams {
                        enable: true,
                        max_selectivity: Some(ACORN_MAX_SELECTIVITY.into()),
                    }),
                    ..SearchParams::default()
                }),
                limit,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: None,
                score_threshold: None,
            };
            let points = shard.search(request).map_err(err)?;
            Ok(points
                .into_iter()
                .filter_map(|p| {
                    let payload = p.payload?;
                    let text =
                        |k: &str| payload.0.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    Some(VectorHit {
                        chunk_id: text("chunk_id")?,
                        document_id: text("document_id")?,
                        score: p.score,
                    })
                })
                .collect())
        })
        .await
    }

    async fn document_counts(&self) -> Result<BTreeMap<(String, String), DocState>, VectorError> {
        // Tenants first, then each tenant's documents with the version
        // their points carry: exact facets on keyword indexes.
        let tenants = FacetRequest {
            key: key(fields::TENANT)?,
            limit: usize::MAX / 2,
            filter: None,
            exact: true,
        };
        let versions_key = key(DOC_VERSION)?;
        self.blocking(move |shard| {
            let keywords = |hits: Vec<FacetValueHit>| -> Vec<(String, usize)> {
                hits.into_iter()
                    .filter_map(|h| match h.value {
                        FacetValue::Keyword(k) => Some((k, h.count)),
                        _ => None,
                    })
                    .collect()
            };
            let mut out = BTreeMap::new();
            for (tenant, _) in keywords(shard.facet(tenants).map_err(err)?.hits)
                .into_iter()
                .filter(|(_, n)| *n > 0)
            {
                let request = FacetRequest {
                    key: versions_key.clone(),
                    limit: usize::MAX / 2,
                    filter: Some(filter(vec![keyword(fields::TENANT, &tenant)?], Vec::new())),
                    exact: true,
                };
                let hits = keywords(shard.facet(request).map_err(err)?.hits);
                fold_doc_versions(&tenant, hits, &mut out);
            }
            Ok(out)
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "qdrant-edge"
    }

    async fn optimize(&self) -> Result<(), VectorError> {
        self.blocking(|shard| {
            let _span = tracing::info_span!("vector_optimize").entered();
            shard.optimize().map(|_| ()).map_err(err)
        })
        .await
    }
}
