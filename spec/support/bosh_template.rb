# frozen_string_literal: true

# A small stand-in for the `bosh-template` gem (which rubygems would bring; here only Debian's
# ruby is at hand): it renders a job's ERB templates the way the BOSH director does.
#
# - Properties: every property declared in the job's spec, with the manifest's value where it
#   gives one and the spec's default otherwise. As in the director, a manifest value of nil
#   (`~`) counts as "not given" and falls back to the default.
# - `p(name)` returns the value and raises UnknownProperty when it is nil; `p(name, default)`
#   returns default instead; `p([a, b])` tries each name in turn.
# - `if_p(*names) { |*values| }` runs the block only when every value is set, and returns an
#   object whose `else { }` runs otherwise.
# - `spec` is the instance spec as an OpenStruct (name, index, id, az, deployment, address,
#   bootstrap, ip, job.name, networks); `name` and `index` as in the director.
# - ERB runs with trim mode '-', as in the director.

require 'erb'
require 'ostruct'
require 'yaml'

module BoshTemplate
  REPO_ROOT = File.expand_path('../..', __dir__)

  # p() of a property that is neither in the manifest nor defaulted.
  class UnknownProperty < StandardError
    def initialize(names)
      super("Can't find property '#{names.join("', or '")}'")
    end
  end

  # Dotted-name access into nested hashes, as bosh-template's PropertyHelper.
  module Properties
    module_function

    def lookup(hash, dotted)
      dotted.split('.').reduce(hash) do |level, key|
        return nil unless level.is_a?(Hash)

        level[key]
      end
    end

    def insert(hash, dotted, value)
      *parents, leaf = dotted.split('.')
      parents.reduce(hash) { |level, key| level[key] ||= {} }[leaf] = value
    end
  end

  # What `if_p` returns when the block did not run: its `else` block runs.
  class ActiveElse
    def initialize(context)
      @context = context
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @context.if_p(*names, &block)
    end
  end

  # What `if_p` returns when the block ran: `else` does nothing.
  class InactiveElse
    def else; end

    def else_if_p(*_names)
      self
    end
  end

  # The object whose binding a template is evaluated in.
  class EvaluationContext
    attr_reader :name, :index, :spec, :properties, :raw_properties

    def initialize(instance_spec, properties)
      @name = instance_spec.dig('job', 'name')
      @index = instance_spec['index']
      @spec = to_openstruct(instance_spec.merge('properties' => properties))
      @raw_properties = properties
      @properties = to_openstruct(properties)
    end

    def p(*args)
      names = Array(args[0])
      names.each do |dotted|
        value = Properties.lookup(@raw_properties, dotted)
        return value unless value.nil?
      end
      return args[1] if args.length == 2

      raise UnknownProperty, names
    end

    def if_p(*names)
      values = names.map do |dotted|
        value = Properties.lookup(@raw_properties, dotted)
        return ActiveElse.new(self) if value.nil?

        value
      end
      yield(*values)
      InactiveElse.new
    end

    def template_binding
      binding
    end

    private

    def to_openstruct(object)
      case object
      when Hash then OpenStruct.new(object.transform_values { |v| to_openstruct(v) })
      when Array then object.map { |v| to_openstruct(v) }
      else object
      end
    end
  end

  # A job of this release: its spec, and its templates rendered on demand.
  class Job
    attr_reader :name, :dir, :spec

    def initialize(name)
      @name = name
      @dir = File.join(REPO_ROOT, 'jobs', name)
      @spec = YAML.safe_load(File.read(File.join(@dir, 'spec')))
    end

    # The template whose rendered file lands at `target` (e.g. 'config/bbr-agent.yml').
    def template(target)
      source, = spec.fetch('templates').find { |_, dest| dest == target }
      raise ArgumentError, "job #{name} renders nothing to #{target}" unless source

      Template.new(self, File.join(dir, 'templates', source))
    end

    # Manifest properties (nested hashes) filled in with the spec's defaults.
    def properties_with_defaults(manifest_properties)
      spec.fetch('properties', {}).each_with_object({}) do |(dotted, definition), merged|
        value = Properties.lookup(manifest_properties, dotted)
        value = (definition || {})['default'] if value.nil?
        Properties.insert(merged, dotted, value)
      end
    end
  end

  # One ERB template of a job.
  class Template
    DEFAULT_INSTANCE = {
      'address' => 'my.bosh.com',
      'az' => 'z1',
      'bootstrap' => true,
      'deployment' => 'my-deployment',
      'id' => 'b0a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d',
      'index' => 0,
      'ip' => '10.0.0.5',
      'name' => 'my-group',
      'networks' => { 'default' => { 'ip' => '10.0.0.5' } }
    }.freeze

    def initialize(job, path)
      @job = job
      @path = path
    end

    # The rendered text. `properties` is the manifest's `properties:` for the job (nested
    # hashes with string keys); `instance` overrides fields of the instance spec. (Both are
    # positional: Ruby 3 would take a braceless string-keyed hash for unknown keywords.)
    def render(properties = {}, instance = {})
      instance_spec = DEFAULT_INSTANCE.merge('job' => { 'name' => @job.name }).merge(instance)
      context = EvaluationContext.new(instance_spec, @job.properties_with_defaults(properties))
      ERB.new(File.read(@path), trim_mode: '-').tap { |erb| erb.filename = @path }
         .result(context.template_binding)
    end
  end
end
