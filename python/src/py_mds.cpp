// MDS shards from Python (docs/streaming.md): the C++ reader, writer, merge and streaming order, thinly bound.
// tessera.data.MdsWriter (tessera/data.py) turns numpy arrays, PIL images, Decimals and JSON objects into the
// values bound here, as Streaming's encodings do.
#include <torch/csrc/autograd/python_variable.h>

#include <tessera/data/mds.h>
#include <tessera/data/streaming.h>
#include <tessera/error.h>
#include <tessera/recipe.h>

#include "common.h"

namespace tessera::python {

namespace {

namespace mds = data::mds;

/// A sample's value from Python: int, float, str, bytes or a tensor (InputError naming the column otherwise).
mds::Value value_from_python(py::handle v, const std::string& column) {
  const std::string where = "MdsWriter.write: column \"" + column + "\"";
  if (PyBool_Check(v.ptr()))  // Streaming would write True as "True", which no reader turns back into a number
    throw InputError(where + ": a bool is not stored by MDS; write int(value)");
  if (PyLong_Check(v.ptr())) {
    try {
      return v.cast<int64_t>();
    } catch (const py::cast_error&) {
      throw InputError(where + ": " + describe_value(v) + " does not fit int64");
    }
  }
  if (PyFloat_Check(v.ptr())) return v.cast<double>();
  if (PyUnicode_Check(v.ptr()) || PyBytes_Check(v.ptr())) return v.cast<std::string>();
  if (THPVariable_Check(v.ptr())) return v.cast<at::Tensor>();
  throw InputError(where + ": expected int, float, str, bytes, a torch.Tensor, or through tessera.data.MdsWriter "
                   "a numpy array or scalar, a PIL image, a Decimal or a JSON value; got " + describe_value(v));
}

/// A decoded value as Streaming's reader returns it: str, bytes, int, float, Decimal, a JSON value, or a tensor.
py::object value_to_python(const mds::SampleView& s, int64_t c, const std::string& encoding) {
  const std::string text(s.raw(c).view());
  if (encoding == "str") return py::str(text);
  if (encoding == "bytes") return py::bytes(text);
  if (encoding == "str_int") return py::int_(py::str(text));
  if (encoding == "str_float") return py::float_(py::str(text));
  if (encoding == "str_decimal") return py::module_::import("decimal").attr("Decimal")(py::str(text));
  if (encoding == "json") return py::module_::import("json").attr("loads")(py::str(text));
  return py::cast(s.tensor(c));
}

}  // namespace

void bind_mds(py::module_& d) {
  d.def("mds_inspect", [](py::handle dir, bool verify) {
    const mds::Inspection r =
        mds::inspect(path_from_python(dir, "mds_inspect"), mds::ReaderOptions().verify_hashes(verify));
    return py::dict(py::arg("column_names") = r.column_names, py::arg("column_encodings") = r.column_encodings,
                    py::arg("samples") = r.samples, py::arg("shards") = r.shards, py::arg("raw_bytes") = r.raw_bytes,
                    py::arg("zip_bytes") = r.zip_bytes, py::arg("compression") = r.compression,
                    py::arg("checksum") = r.checksum);
  }, py::arg("dir"), py::arg("verify") = false, "What `tessera-shard inspect DIR` prints, as a dict.");
  d.def("merge_index", [](py::handle root) {
    const mds::Merged m = mds::merge_index(path_from_python(root, "merge_index"));
    return py::dict(py::arg("parts") = m.parts, py::arg("empty_parts") = m.empty_parts,
                    py::arg("shards") = m.index.shards.size(), py::arg("samples") = m.index.total_samples());
  }, py::arg("root"),
        "Joins the data sets that parallel writers wrote into subfolders of `root` (at any depth; natural order "
        "of their paths) by writing root/index.json, as Streaming's merge_index and `tessera-shard merge ROOT`. "
        "Returns {parts, empty_parts, shards, samples}. tessera.InputError (nothing written) for no part, parts "
        "with different columns, a missing shard file, or a root that holds a data set of its own.");
  d.def(
      "streaming_order",
      [](std::vector<int64_t> shard_offsets, uint64_t seed, int64_t epoch, int64_t batch_size, int64_t begin,
         int64_t end, bool shuffle, int64_t shuffle_block_size, int64_t partitions) {
        const data::StreamingOrder order(std::move(shard_offsets), data::StreamingOrderOptions()
                                                                       .shuffle(shuffle)
                                                                       .shuffle_block_size(shuffle_block_size)
                                                                       .partitions(partitions));
        return at::tensor(order.range(seed, epoch, batch_size, begin, end < 0 ? order.size() : end), at::kLong);
      },
      py::arg("shard_offsets"), py::arg("seed"), py::arg("epoch"), py::arg("batch_size"), py::arg("begin") = 0,
      py::arg("end") = -1, py::arg("shuffle") = true, py::arg("shuffle_block_size") = 262144,
      py::arg("partitions") = 8,
      "Sample ids at positions [begin, end) (end -1: the epoch's end) of epoch `epoch`'s streaming order over shards "
      "with these offsets (MdsReader.shard_offsets), for global batches of `batch_size`: the order the C++ "
      "StreamingDataset gives its DataLoader (int64 tensor; docs/streaming.md).");
  py::class_<mds::Reader>(d, "MdsReader", "An MDS data set folder, read with random access (the C++ mds::Reader).")
      .def(py::init([](py::handle dir, bool verify) {
             return std::make_unique<mds::Reader>(path_from_python(dir, "MdsReader"),
                                                  mds::ReaderOptions().verify_hashes(verify));
           }), py::arg("dir"), py::arg("verify_hashes") = false)
      .def("__len__", &mds::Reader::size)
      .def_property_readonly("column_names", &mds::Reader::column_names)
      .def_property_readonly("column_encodings", &mds::Reader::column_encodings)
      .def_property_readonly("num_shards", &mds::Reader::num_shards)
      .def_property_readonly("shard_offsets", &mds::Reader::shard_offsets,
                             "Each shard's first global sample index, then len(reader).")
      .def("__getitem__", [](const mds::Reader& r, int64_t i) {
        if (i < 0) i += r.size();
        if (i < 0 || i >= r.size())  // IndexError, so that `for sample in reader` ends
          throw py::index_error("sample index out of range for an MDS data set of " + std::to_string(r.size()));
        const mds::SampleView s = r.sample(i);
        py::dict out;
        for (int64_t c = 0; c < s.num_columns(); ++c)
          out[py::str(r.column_names()[static_cast<size_t>(c)])] =
              value_to_python(s, c, r.column_encodings()[static_cast<size_t>(c)]);
        return out;
      }, py::arg("index"),
           "Sample `index` as {column: value}: str, bytes, int (str_int), float (str_float), Decimal (str_decimal), "
           "the JSON value (json), or a tensor (a view of the shard where aligned).");
  py::class_<data::StreamingDataset, std::shared_ptr<data::StreamingDataset>>(
      d, "_StreamingDataset", "The C++ StreamingDataset; use tessera.data.StreamingDataset.")
      .def(py::init([](const py::dict& options) {
             // Read exactly as a recipe's `streaming:` section (the same keys, checks and messages).
             const std::string text = py::module_::import("json").attr("dumps")(options).cast<std::string>();
             const Recipe recipe = Recipe::parse("{\"streaming\": " + text + "}", "<StreamingDataset>");
             data::StreamingOptions o;
             read_options(recipe.root().child("streaming"), o, "streaming");
             return std::make_shared<data::StreamingDataset>(o);
           }), py::arg("options"))
      .def("__len__", &data::StreamingDataset::size)
      .def("epoch_positions", &data::StreamingDataset::epoch_positions, py::arg("batch_size"))
      .def("order_range",
           [](const data::StreamingDataset& ds, uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle,
              int64_t begin, int64_t end) {
             return ds.order_range(seed, epoch, batch_size, shuffle, begin, end);
           },
           py::arg("seed"), py::arg("epoch"), py::arg("batch_size"), py::arg("shuffle"), py::arg("begin"),
           py::arg("end"))
      .def("get_batch", &data::StreamingDataset::get_batch, py::arg("ids"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("num_classes", &data::StreamingDataset::num_classes)
      .def_property_readonly("input_shape", &data::StreamingDataset::input_shape)
      .def_property_readonly("tokens_per_example", &data::StreamingDataset::tokens_per_example)
      .def("describe", &data::StreamingDataset::describe);
  py::class_<mds::Writer>(d, "_MdsWriter", "The C++ mds::Writer; use tessera.data.MdsWriter.")
      .def(py::init([](const std::string& dir, const mds::Columns& columns, const std::string& compression,
                       const std::vector<std::string>& hashes, int64_t size_limit, bool exist_ok,
                       int64_t jpeg_quality) {
             mds::WriterOptions options;
             options.columns(columns).compression(compression).hashes(hashes).size_limit(size_limit)
                 .exist_ok(exist_ok).jpeg_quality(jpeg_quality);
             return std::make_unique<mds::Writer>(dir, options);
           }), py::arg("dir"), py::arg("columns"), py::arg("compression"), py::arg("hashes"), py::arg("size_limit"),
           py::arg("exist_ok"), py::arg("jpeg_quality"))
      .def("write", [](mds::Writer& w, const py::dict& sample) {
        mds::Sample values;
        for (const auto& [key, value] : sample) {
          const std::string column = py::str(key).cast<std::string>();
          values[column] = value_from_python(value, column);
        }
        w.write(values);
      }, py::arg("sample"))
      .def("finish", [](mds::Writer& w) {
        const mds::Index& index = w.finish();
        return py::dict(py::arg("shards") = index.shards.size(), py::arg("samples") = index.total_samples());
      });
}

}  // namespace tessera::python
