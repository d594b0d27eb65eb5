//! An owner's files on the server: listed a page at a time, deleted.

use transfer_proto::v1::{DeleteFileRequest, FileInfo, FileState, ListFilesRequest};

use crate::client::TransferClient;
use crate::error::TransferError;

/// Which of the owner's files [`TransferClient::list_page`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFilter {
    /// Only files in this state; every state when `None`.
    pub state: Option<FileState>,
    /// Only files whose name starts with this; every name when empty.
    pub name_prefix: String,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilePage {
    /// Newest first.
    pub files: Vec<FileInfo>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

impl TransferClient {
    /// A page of at most `page_size` of the owner's files matching `filter`, newest
    /// first (0: the server's default size). `page_token` is empty for the first page,
    /// then the previous page's [`FilePage::next`].
    pub async fn list_page(
        &self,
        filter: &FileFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<FilePage, TransferError> {
        let request = ListFilesRequest {
            page_size,
            page_token: page_token.to_owned(),
            state: filter.state.unwrap_or(FileState::Unspecified).into(),
            name_prefix: filter.name_prefix.clone(),
        };
        let page = self
            .raw()
            .list_files(request)
            .await
            .map_err(|s| TransferError::refused("ListFiles", &s))?
            .into_inner();
        Ok(FilePage {
            files: page.files,
            next: Some(page.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    /// Deletes one of the owner's files, in whatever state (an open upload is aborted).
    /// Its content goes from the server once no file holds it and a grace period has
    /// passed.
    pub async fn delete(&self, file_id: &str) -> Result<(), TransferError> {
        self.raw()
            .delete_file(DeleteFileRequest {
                file_id: file_id.to_owned(),
            })
            .await
            .map_err(|s| TransferError::refused(file_id, &s))?;
        Ok(())
    }
}
