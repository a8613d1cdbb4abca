'use strict';
// A small promise-based client for glance-grpc-gateway, built from the published contract alone: it loads
// protos/glance/gateway/v1/image_service.proto at run time (no generated code). The well-known types it imports
// (google/protobuf/field_mask.proto, timestamp.proto) are built into protobufjs, so protos/ is the only include
// directory. ErrorInfo details are read from the "grpc-status-details-bin" trailer with a trimmed copy of
// googleapis' google/rpc protos (googleapis/ here).

const crypto = require('node:crypto');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const GOOGLEAPIS = path.join(__dirname, 'googleapis');

const definition = protoLoader.loadSync('glance/gateway/v1/image_service.proto', {
  includeDirs: [PROTOS],
  keepCase: true, // field names as in the .proto: image_id, update_mask, ...
  longs: Number, // int64 sizes and offsets as numbers (exact up to 2^53 bytes)
  enums: String, // 'IMAGE_STATUS_ACTIVE' rather than 3
  defaults: true, // unset scalars come back as their zero values
  oneofs: true, // the oneof's name says which member is set (msg.content === 'header')
});
const { ImageService } = grpc.loadPackageDefinition(definition).glance.gateway.v1;

const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => path.join(GOOGLEAPIS, target);
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = rpcTypes.lookupType('google.rpc.Status');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');

/** The ErrorInfo of a failed call ({reason, domain, metadata}), or null when the status carries none. */
function errorInfo(err) {
  const [bin] = (err && err.metadata && err.metadata.get('grpc-status-details-bin')) || [];
  if (!bin) return null;
  const status = Status.decode(bin);
  const detail = status.details.find((any) => any.type_url.endsWith('/google.rpc.ErrorInfo'));
  if (!detail) return null;
  return ErrorInfo.toObject(ErrorInfo.decode(detail.value), { defaults: true });
}

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

/** 'NOT_FOUND' for a grpc-js error with code 5. */
function codeName(err) {
  return CODE_NAMES[err.code];
}

class Client {
  /**
   * @param {string} address host:port of the gateway (GLANCE_GRPC_ADDRESS)
   * @param {object} [options] token: a Keystone token (sent as x-auth-token); credentials: grpc credentials
   *   (insecure by default); timeoutMs: deadline of each call
   */
  constructor(address, { token, credentials, timeoutMs = 60_000 } = {}) {
    this.stub = new ImageService(address, credentials || grpc.credentials.createInsecure());
    this.timeoutMs = timeoutMs;
    this.metadata = new grpc.Metadata();
    if (token) this.metadata.set('x-auth-token', token);
  }

  close() {
    this.stub.close();
  }

  _options() {
    return { deadline: Date.now() + this.timeoutMs };
  }

  _unary(method, request) {
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadata, this._options(), (err, response) =>
        err ? reject(err) : resolve(response),
      );
    });
  }

  /** One page of images: {images, next_page_token}. view: 'IMAGE_VIEW_BASIC' (brief) or 'IMAGE_VIEW_FULL'. */
  listImages(request = {}) {
    return this._unary('ListImages', request);
  }

  /** Every image that matches, page after page. */
  async *allImages(request = {}) {
    let page_token = '';
    do {
      const page = await this.listImages({ ...request, page_token });
      yield* page.images;
      page_token = page.next_page_token;
    } while (page_token);
  }

  /** Metadata by id or by URI: {image_id} or {image_uri}. */
  async getImageMeta(which) {
    return (await this._unary('GetImageMeta', which)).image;
  }

  /**
   * Downloads an image: {image_id} or {image_uri}, optionally offset and limit.
   * Resolves to {header, data}: header is the DownloadHeader (image, offset, length, verified).
   */
  async getImage(request) {
    const call = this.stub.GetImage(request, this.metadata, this._options());
    let header = null;
    const chunks = [];
    for await (const message of call) {
      if (message.content === 'header') header = message.header;
      else chunks.push(message.data);
    }
    return { header, data: Buffer.concat(chunks) };
  }

  /**
   * Creates an image from spec (an ImageSpec) and data (a Buffer, or an iterable of Buffers; none for a queued
   * image). The data streams in order and ends with an UploadFinish carrying the SHA-512 computed while sending,
   * so the gateway keeps the image only if every byte arrived intact.
   */
  addImage(spec, data) {
    const chunks = data === undefined ? [] : Buffer.isBuffer(data) ? chunked(data, 256 * 1024) : data;
    return new Promise((resolve, reject) => {
      const call = this.stub.AddImage(this.metadata, this._options(), (err, response) =>
        err ? reject(err) : resolve(response.image),
      );
      if (data === undefined) {
        call.write({ spec });
        call.end();
        return;
      }
      call.write({ spec: { ...spec, finish_digests: ['DIGEST_ALGORITHM_SHA512'] } });
      const sha512 = crypto.createHash('sha512');
      (async () => {
        for (const chunk of chunks) {
          sha512.update(chunk);
          // Respect flow control: wait for 'drain' when grpc-js's buffer is full.
          if (!call.write({ data: chunk })) await new Promise((done) => call.once('drain', done));
        }
        call.write({ finish: { sha512: sha512.digest('hex') } });
        call.end();
      })().catch((err) => {
        call.cancel();
        reject(err);
      });
    });
  }

  /** Changes the fields named in paths (e.g. ['name', 'properties.distro']) to their values in image. */
  async updateImage(image_id, image, paths) {
    return (await this._unary('UpdateImage', { image_id, image, update_mask: { paths } })).image;
  }

  async deleteImage(image_id) {
    await this._unary('DeleteImage', { image_id });
  }
}

function* chunked(buffer, size) {
  for (let start = 0; start < buffer.length; start += size) yield buffer.subarray(start, start + size);
}

module.exports = { Client, errorInfo, codeName, grpc };
