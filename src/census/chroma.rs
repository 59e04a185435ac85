//! One census pass over Chroma: every collection of the configured tenant
//! and database, paged through the list API, and each one's count.

use crate::backends::chroma::ChromaClient;
use crate::backends::BackendError;

/// Collections per page of the list API.
const PAGE: usize = 100;

/// A finished pass: every collection's name and records, largest first.
#[derive(Debug, Default, Clone)]
pub(crate) struct ChromaPass {
    pub(crate) collections: Vec<(String, u64)>,
}

/// Lists and counts every collection.
pub(crate) async fn pass(client: &ChromaClient) -> Result<ChromaPass, BackendError> {
    let mut collections = Vec::new();
    let mut offset = 0;
    loop {
        let page = client.list_collections(PAGE, offset).await?;
        let last = page.len() < PAGE;
        for collection in page {
            let records = client.count(&collection.id).await?;
            collections.push((collection.name, records));
        }
        if last {
            break;
        }
        offset += PAGE;
    }
    collections.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(ChromaPass { collections })
}
