'use strict';
// The classic Glance client walkthrough against a running gateway (GLANCE_GRPC_ADDRESS, default localhost:50051):
// add an image with properties and data, list it brief and detailed, read its metadata by id and by URI,
// download it whole (verified) and a range of it, update it, delete it, and the errors on the way.
// Run: GLANCE_GRPC_ADDRESS=host:port node --test

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { after, before, test } = require('node:test');
const { Client, errorInfo, codeName } = require('./client');

const ADDRESS = process.env.GLANCE_GRPC_ADDRESS || 'localhost:50051';
// About 1.5 MiB: several upload chunks and more than one (1 MiB) download chunk.
const DATA = crypto.randomBytes(3 * 512 * 1024 + 123);
const ID = crypto.randomUUID();
const NAME = `Ubuntu 10.10 5G (node ${ID.slice(0, 8)})`;

let client;
let image; // AddImage's result
let deleted = false;

/** Awaits a call that must fail; checks its gRPC code and ErrorInfo reason; returns the ErrorInfo. */
async function expectError(promise, code, reason) {
  const err = await promise.then(
    () => assert.fail(`expected ${code}, the call succeeded`),
    (e) => e,
  );
  assert.equal(codeName(err), code, `${err.message}`);
  const info = errorInfo(err);
  assert.ok(info, `no ErrorInfo in the status details of ${err.message}`);
  assert.equal(info.domain, 'glance-grpc-gateway');
  assert.equal(info.reason, reason, err.message);
  return info;
}

before(() => {
  client = new Client(ADDRESS, { token: process.env.OS_AUTH_TOKEN });
});

after(async () => {
  if (image && !deleted) await client.deleteImage(image.id).catch(() => {});
  client.close();
});

test('add_image: a public machine image with a property and its data', async () => {
  image = await client.addImage(
    {
      name: NAME,
      id: ID,
      type: 'IMAGE_TYPE_MACHINE',
      is_public: 'true',
      size: DATA.length,
      properties: { distro: 'Ubuntu 10.10' },
    },
    DATA,
  );
  assert.equal(image.id, ID);
  assert.equal(image.status, 'IMAGE_STATUS_ACTIVE');
  assert.equal(image.size, DATA.length);
  assert.deepEqual([image.disk_format, image.container_format], ['ami', 'ami']);
  assert.equal(image.visibility, 'VISIBILITY_PUBLIC');
  assert.equal(image.properties.distro, 'Ubuntu 10.10');
  assert.equal(image.os_hash_algo, 'sha512');
  assert.equal(image.os_hash_value, crypto.createHash('sha512').update(DATA).digest('hex'));
  assert.equal(image.checksum, crypto.createHash('md5').update(DATA).digest('hex'));
});

test('add_image with an id that exists: ALREADY_EXISTS', async () => {
  await expectError(
    client.addImage({ name: NAME, id: ID, disk_format: 'raw', container_format: 'bare' }),
    'ALREADY_EXISTS',
    'IMAGE_ALREADY_EXISTS',
  );
});

test('get_images (brief) and get_images_detailed', async () => {
  const brief = [];
  for await (const found of client.allImages({ name: NAME, view: 'IMAGE_VIEW_BASIC' })) brief.push(found);
  assert.deepEqual(
    brief.map((found) => found.id),
    [ID],
  );
  assert.equal(brief[0].status, 'IMAGE_STATUS_ACTIVE');
  assert.equal(brief[0].size, DATA.length);
  assert.equal(brief[0].checksum, image.checksum);
  assert.match(brief[0].uri, new RegExp(`/v2/images/${ID}$`));
  assert.deepEqual(brief[0].properties, {}); // the brief view leaves out the detail

  const { images: detailed } = await client.listImages({ name: NAME, view: 'IMAGE_VIEW_FULL' });
  assert.deepEqual(
    detailed.map((found) => found.id),
    [ID],
  );
  assert.equal(detailed[0].properties.distro, 'Ubuntu 10.10');
  assert.equal(detailed[0].os_hash_value, image.os_hash_value);
  assert.ok(detailed[0].create_time.seconds > 0);
});

test('get_image_meta by id and by the URI from the brief listing', async () => {
  const byId = await client.getImageMeta({ image_id: ID });
  assert.equal(byId.name, NAME);
  assert.equal(byId.properties.distro, 'Ubuntu 10.10');
  const byUri = await client.getImageMeta({ image_uri: image.uri });
  assert.deepEqual(byUri, byId);
});

test('get_image: the whole image, verified by the gateway', async () => {
  const { header, data } = await client.getImage({ image_id: ID });
  assert.equal(header.verified, true);
  assert.equal(header.offset, 0);
  assert.equal(header.length, DATA.length);
  assert.equal(header.image.id, ID);
  assert.ok(data.equals(DATA), 'downloaded bytes differ from the uploaded ones');
});

test('get_image: a byte range, by URI', async () => {
  const { header, data } = await client.getImage({ image_uri: image.uri, offset: 1000, limit: 5000 });
  assert.equal(header.verified, false); // partial reads cannot be checked against a whole-image hash
  assert.deepEqual([header.offset, header.length], [1000, 5000]);
  assert.ok(data.equals(DATA.subarray(1000, 6000)), 'ranged bytes differ');
});

test('update_image: only the fields in update_mask change', async () => {
  const updated = await client.updateImage(
    ID,
    { name: `${NAME} (renamed)`, min_ram_mib: 512, properties: { distro: 'Ubuntu 24.04' }, protected: true },
    ['name', 'min_ram_mib', 'properties.distro'], // "protected" is not in the mask: ignored
  );
  assert.equal(updated.name, `${NAME} (renamed)`);
  assert.equal(updated.min_ram_mib, 512);
  assert.equal(updated.properties.distro, 'Ubuntu 24.04');
  assert.equal(updated.protected, false);
});

test('delete_image, then NOT_FOUND', async () => {
  await client.deleteImage(ID);
  deleted = true;
  const info = await expectError(client.getImageMeta({ image_id: ID }), 'NOT_FOUND', 'NOT_FOUND');
  assert.equal(info.metadata.image_id, ID);
  assert.equal(info.metadata.glance_status, '404');
  await expectError(client.getImage({ image_id: ID }), 'NOT_FOUND', 'NOT_FOUND');
});

test('a malformed image id: INVALID_ARGUMENT', async () => {
  await expectError(client.getImageMeta({ image_id: 'not-a-uuid' }), 'INVALID_ARGUMENT', 'INVALID_IMAGE_ID');
});
