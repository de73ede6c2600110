/** Items of a list call's page when the client asks for no size: the API's default (chat.proto, account.proto). */
const DEFAULT_PAGE_SIZE = 100;

export interface PageRequest {
  pageSize: number;
  pageToken: string;
}

/**
 * One page of a list in key order: up to the page size of the items after the page token (read by `read`), and the
 * next page's token, the page's last key when the page is full, else empty.
 */
export async function keyPage<T>(
  page: PageRequest,
  read: (afterKey: string | null, limit: number) => Promise<T[]>,
  keyOf: (item: T) => string,
): Promise<{ items: T[]; nextPageToken: string }> {
  const limit = page.pageSize || DEFAULT_PAGE_SIZE;
  const items = await read(page.pageToken || null, limit);
  return { items, nextPageToken: items.length === limit ? keyOf(items[items.length - 1]!) : "" };
}
