import { and, asc, desc, eq, or, type SQL, sql } from "drizzle-orm";
import { auditStatement, sealAuditLog } from "../audit/log";
import type { Principal } from "../auth/principal";
import { type Database, isUniqueViolation, newId, nowIso } from "../db/client";
import { accounts, capsules, collectionItems, collections, featuredCapsules } from "../db/schema";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import type { CatalogItem } from "../marketplace/catalog";
import { decodeCursor, pageOf } from "./cursor";
import { capsuleSummaries, catalogItem, publisherColumns, requireCapsule } from "./discovery";

/** Enough for any shelf a person curates by hand; keeps a collection page one cheap query. */
export const MAX_COLLECTION_ITEMS = 200;
/** Public collections are listed to everyone, so one account cannot flood the listing. */
export const MAX_COLLECTIONS_PER_ACCOUNT = 100;
/** The featured shelf is shown first on discovery pages; a short list keeps it a shelf. */
export const MAX_FEATURED = 50;

type CollectionRow = typeof collections.$inferSelect;
export type Visibility = "public" | "private";

export interface CollectionSummary {
  id: string;
  title: string;
  description: string;
  visibility: Visibility;
  curated: boolean;
  /** The account that made it; null for a curated collection made with the bootstrap admin token. */
  owner: { handle: string } | null;
  itemCount: number;
  createdAt: string;
  updatedAt: string;
}

export interface CollectionDetail extends CollectionSummary {
  items: { capsule: CatalogItem; addedAt: string }[];
}

const isAdmin = (principal: Principal | null) => principal?.roles.includes("admin") === true;

function summary(row: CollectionRow, handle: string | null, itemCount: number): CollectionSummary {
  return {
    id: row.id,
    title: row.title,
    description: row.description,
    visibility: row.visibility,
    curated: row.curated,
    owner: handle === null ? null : { handle },
    itemCount,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

const itemCount = sql<number>`(SELECT count(*) FROM collection_items WHERE collection_id = ${collections.id})`;

/** Who may see a collection: anyone when public, only its owner when private. */
function visibleTo(viewer: Principal | null): SQL | undefined {
  return viewer?.accountId
    ? or(eq(collections.visibility, "public"), eq(collections.ownerId, viewer.accountId))
    : eq(collections.visibility, "public");
}

async function loadCollection(db: Database, viewer: Principal | null, id: string) {
  const [row] = await db
    .select({ collection: collections, handle: accounts.handle, itemCount })
    .from(collections)
    .leftJoin(accounts, eq(accounts.id, collections.ownerId))
    .where(and(eq(collections.id, id), visibleTo(viewer)))
    .limit(1);
  // A private collection of someone else answers as missing, so ids do not reveal that it exists.
  if (!row) throw new AppError("NOT_FOUND", `No collection ${id}`);
  return row;
}

async function editableCollection(db: Database, editor: Principal, id: string) {
  const row = await loadCollection(db, editor, id);
  if (isAdmin(editor)) return row;
  // Curated collections speak for the platform, so only admins change them, whoever created them.
  if (row.collection.curated) throw new AppError("FORBIDDEN", "Only admins change curated collections");
  if (editor.accountId === null || row.collection.ownerId !== editor.accountId) {
    throw new AppError("FORBIDDEN", "Only the collection's owner or an admin can change it");
  }
  return row;
}

function requireCurator(principal: Principal) {
  if (!isAdmin(principal)) throw new AppError("FORBIDDEN", "Only admins curate collections");
}

function requirePublicIfCurated(curated: boolean, visibility: Visibility) {
  if (curated && visibility === "private") {
    throw new AppError(
      "VALIDATION_FAILED",
      "Invalid request body: visibility: curated collections are public",
      {
        issues: [{ path: "visibility", message: "curated collections are public" }],
      },
    );
  }
}

/** Creates a collection. Curated ones are admins' (and public); everyone else needs an account. */
export async function createCollection(
  db: Database,
  creator: Principal,
  input: { title: string; description: string; visibility: Visibility; curated: boolean },
): Promise<CollectionSummary> {
  if (input.curated) requireCurator(creator);
  requirePublicIfCurated(input.curated, input.visibility);
  if (!input.curated && creator.accountId === null) {
    throw new AppError("FORBIDDEN", "This action needs an account; the bootstrap admin token has none");
  }
  if (creator.accountId !== null) {
    const [owned] = await db
      .select({ n: sql<number>`count(*)` })
      .from(collections)
      .where(eq(collections.ownerId, creator.accountId));
    if ((owned?.n ?? 0) >= MAX_COLLECTIONS_PER_ACCOUNT) {
      throw new AppError(
        "INVALID_STATE",
        `An account can have at most ${MAX_COLLECTIONS_PER_ACCOUNT} collections`,
      );
    }
  }
  const now = nowIso();
  const row: CollectionRow = {
    id: newId("col"),
    ownerId: creator.accountId,
    title: input.title,
    description: input.description,
    visibility: input.visibility,
    curated: input.curated,
    createdAt: now,
    updatedAt: now,
  };
  await db.insert(collections).values(row);
  return summary(row, creator.handle, 0);
}

/** Changes a collection's title, description, visibility or (admins only) whether it is curated. */
export async function updateCollection(
  db: Database,
  editor: Principal,
  id: string,
  patch: {
    title?: string | undefined;
    description?: string | undefined;
    visibility?: Visibility | undefined;
    curated?: boolean | undefined;
  },
): Promise<CollectionSummary> {
  const { collection, handle, itemCount: items } = await editableCollection(db, editor, id);
  const next: CollectionRow = {
    ...collection,
    title: patch.title ?? collection.title,
    description: patch.description ?? collection.description,
    visibility: patch.visibility ?? collection.visibility,
    curated: patch.curated ?? collection.curated,
    updatedAt: nowIso(),
  };
  if (next.curated !== collection.curated) requireCurator(editor);
  requirePublicIfCurated(next.curated, next.visibility);
  await db
    .update(collections)
    .set({
      title: next.title,
      description: next.description,
      visibility: next.visibility,
      curated: next.curated,
      updatedAt: next.updatedAt,
    })
    .where(eq(collections.id, id));
  return summary(next, handle, Number(items));
}

/** Deletes a collection and its items. */
export async function deleteCollection(db: Database, editor: Principal, id: string): Promise<void> {
  await editableCollection(db, editor, id);
  await db.batch([
    db.delete(collectionItems).where(eq(collectionItems.collectionId, id)),
    db.delete(collections).where(eq(collections.id, id)),
  ]);
}

/** Adds a published capsule to a collection (once). */
export async function addCollectionItem(
  db: Database,
  editor: Principal,
  id: string,
  capsuleName: string,
): Promise<{ capsule: CatalogItem; addedAt: string }> {
  const { itemCount: items } = await editableCollection(db, editor, id);
  const capsule = await requireCapsule(db, capsuleName);
  if (Number(items) >= MAX_COLLECTION_ITEMS) {
    throw new AppError("INVALID_STATE", `A collection holds at most ${MAX_COLLECTION_ITEMS} capsules`);
  }
  const addedAt = nowIso();
  try {
    await db.batch([
      db.insert(collectionItems).values({ collectionId: id, capsuleName, addedAt }),
      db.update(collections).set({ updatedAt: addedAt }).where(eq(collections.id, id)),
    ]);
  } catch (error) {
    if (isUniqueViolation(error))
      throw new AppError("CONFLICT", `${capsuleName} is already in the collection`);
    throw error;
  }
  const [listed] = [...(await capsuleSummaries(db, [capsule.name])).values()];
  if (!listed) throw new AppError("NOT_FOUND", `No capsule ${capsuleName}`);
  return { capsule: listed, addedAt };
}

/** Takes a capsule out of a collection. */
export async function removeCollectionItem(
  db: Database,
  editor: Principal,
  id: string,
  capsuleName: string,
): Promise<void> {
  await editableCollection(db, editor, id);
  const inCollection = and(
    eq(collectionItems.collectionId, id),
    eq(collectionItems.capsuleName, capsuleName),
  );
  const [item] = await db.select().from(collectionItems).where(inCollection).limit(1);
  if (!item) throw new AppError("NOT_FOUND", `${capsuleName} is not in collection ${id}`);
  await db.batch([
    db.delete(collectionItems).where(inCollection),
    db.update(collections).set({ updatedAt: nowIso() }).where(eq(collections.id, id)),
  ]);
}

/** Public collections and the viewer's own private ones: curated first, then the most recently changed. */
export async function listCollections(
  db: Database,
  viewer: Principal | null,
  query: { limit: number; cursor?: string | undefined },
): Promise<{ items: CollectionSummary[]; nextCursor: string | null }> {
  const offset = decodeCursor(query.cursor);
  const rows = await db
    .select({ collection: collections, handle: accounts.handle, itemCount })
    .from(collections)
    .leftJoin(accounts, eq(accounts.id, collections.ownerId))
    .where(visibleTo(viewer))
    .orderBy(desc(collections.curated), desc(collections.updatedAt), asc(collections.id))
    .limit(query.limit + 1)
    .offset(offset);
  const page = pageOf(rows, query.limit, offset);
  return {
    items: page.items.map((row) => summary(row.collection, row.handle, Number(row.itemCount))),
    nextCursor: page.nextCursor,
  };
}

/** One collection with its capsules in the order they were added. */
export async function getCollection(
  db: Database,
  viewer: Principal | null,
  id: string,
): Promise<CollectionDetail> {
  const row = await loadCollection(db, viewer, id);
  const items = await db
    .select({ capsule: capsules, addedAt: collectionItems.addedAt, ...publisherColumns })
    .from(collectionItems)
    .innerJoin(capsules, eq(capsules.name, collectionItems.capsuleName))
    .leftJoin(accounts, eq(accounts.id, capsules.ownerId))
    .where(eq(collectionItems.collectionId, id))
    .orderBy(asc(collectionItems.addedAt), asc(collectionItems.capsuleName));
  return {
    ...summary(row.collection, row.handle, Number(row.itemCount)),
    items: items.map((item) => ({ capsule: catalogItem(item.capsule, item), addedAt: item.addedAt })),
  };
}

/** Replaces the featured shelf with the given capsules, in that order. */
export async function setFeatured(
  db: Database,
  admin: Principal,
  names: string[],
): Promise<{ capsule: CatalogItem; position: number; featuredAt: string }[]> {
  const found = await capsuleSummaries(db, names);
  const missing = names.filter((name) => !found.has(name));
  if (missing.length > 0) {
    throw new AppError("NOT_FOUND", `No capsule ${missing.join(", ")}`, { missing });
  }
  const featuredAt = nowIso();
  const rows = names.map((capsuleName, position) => ({
    capsuleName,
    position,
    featuredBy: admin.accountId,
    featuredAt,
  }));
  // Four parameters a row: chunks stay under D1's 100 bound parameters per statement.
  const inserts = [];
  for (let i = 0; i < rows.length; i += 20)
    inserts.push(db.insert(featuredCapsules).values(rows.slice(i, i + 20)));
  await db.batch([
    db.delete(featuredCapsules),
    ...inserts,
    outboxInsert(
      db,
      cloudEvent("soma.featured.updated", "featured", { capsules: names, featuredBy: admin.accountId }),
    ),
    auditStatement(db, {
      actor: admin,
      action: "featured.changed",
      target: "featured",
      details: { capsules: names },
    }),
  ]);
  await sealAuditLog(db);
  return names.map((name, position) => ({ capsule: found.get(name)!, position, featuredAt }));
}

/** The featured shelf in the order the admins picked. */
export async function listFeatured(
  db: Database,
): Promise<{ capsule: CatalogItem; position: number; featuredAt: string }[]> {
  const rows = await db
    .select({
      capsule: capsules,
      position: featuredCapsules.position,
      featuredAt: featuredCapsules.featuredAt,
      ...publisherColumns,
    })
    .from(featuredCapsules)
    .innerJoin(capsules, eq(capsules.name, featuredCapsules.capsuleName))
    .leftJoin(accounts, eq(accounts.id, capsules.ownerId))
    .orderBy(asc(featuredCapsules.position));
  return rows.map((row) => ({
    capsule: catalogItem(row.capsule, row),
    position: row.position,
    featuredAt: row.featuredAt,
  }));
}
