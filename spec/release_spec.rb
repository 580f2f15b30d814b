# frozen_string_literal: true

require 'tmpdir'
require 'open3'

# The BOSH release's layout: what `bosh create-release` and the director rely on.
RSpec.describe 'the bbr-agent BOSH release' do
  root = BoshTemplate::REPO_ROOT
  job = BoshTemplate::Job.new('bbr-agent')
  package_spec = YAML.safe_load(File.read(File.join(root, 'packages/bbr-agent/spec')))

  describe 'jobs/bbr-agent' do
    it 'is named after its directory and uses the bbr-agent package' do
      expect(job.spec['name']).to eq('bbr-agent')
      expect(job.spec['packages']).to eq(['bbr-agent'])
    end

    it 'renders its config where the agent reads it by default' do
      expect(job.spec['templates']).to include('bbr-agent.yml.erb' => 'config/bbr-agent.yml')
    end

    it 'lists every template it ships, and ships every template it lists' do
      shipped = Dir.children(File.join(job.dir, 'templates')).sort
      expect(job.spec['templates'].keys.sort).to eq(shipped)
    end

    it 'installs nothing under bin/bbr/, so BBR and the agent never take it for a BBR job' do
      expect(job.spec['templates'].values).to all(satisfy { |target| !target.start_with?('bin/') })
    end

    it 'runs no process: its monit file holds only comments' do
      lines = File.readlines(File.join(job.dir, 'monit')).map(&:strip)
      expect(lines.reject { |line| line.empty? || line.start_with?('#') }).to be_empty
      expect(lines.first).to start_with('#')
    end

    it 'documents every property and gives it a default' do
      job.spec['properties'].each do |name, definition|
        expect(definition['description']).to be_a(String).and(satisfy { |d| !d.strip.empty? }), name
        expect(definition).to have_key('default'), name
      end
    end

    it 'lets each property change the rendered config' do
      template = job.template('config/bbr-agent.yml')
      baseline = template.render
      other_value = lambda do |default|
        case default
        when Integer then default + 1
        when /\A\d+\.\d+\.\d+\z/ then '9.9.9'
        when 'info' then 'debug'
        else '7m'
        end
      end
      job.spec['properties'].each do |name, definition|
        properties = {}
        BoshTemplate::Properties.insert(properties, name, other_value.call(definition['default']))
        expect(template.render(properties)).not_to eq(baseline), "#{name} changes nothing"
      end
    end
  end

  describe 'packages/bbr-agent' do
    it 'is named after its directory and installs a blob, compiling nothing' do
      expect(package_spec['name']).to eq('bbr-agent')
      expect(package_spec['dependencies']).to eq([])
      expect(package_spec['files']).to eq(['bbr-agent/bbr-agent-linux-amd64'])
    end

    it 'installs the blob as bin/bbr-agent, executable, and runs it once' do
      Dir.mktmpdir do |dir|
        compile = File.join(dir, 'compile')
        install = File.join(dir, 'install')
        blob = File.join(compile, 'bbr-agent/bbr-agent-linux-amd64')
        FileUtils.mkdir_p(File.dirname(blob))
        File.write(blob, "#!/bin/sh\necho \"ran: $*\"\n")
        File.chmod(0o644, blob) # blobs arrive without the executable bit
        out, status = Open3.capture2e({ 'BOSH_INSTALL_TARGET' => install },
                                      'bash', File.join(root, 'packages/bbr-agent/packaging'),
                                      chdir: compile)
        expect(status).to be_success, out
        expect(out).to eq("ran: version\n")
        installed = File.join(install, 'bin/bbr-agent')
        expect(File.stat(installed).mode & 0o777).to eq(0o755)
        expect(File.read(installed)).to eq(File.read(blob))
      end
    end

    it 'fails to install a blob that cannot run' do
      Dir.mktmpdir do |dir|
        blob = File.join(dir, 'bbr-agent/bbr-agent-linux-amd64')
        FileUtils.mkdir_p(File.dirname(blob))
        File.write(blob, "#!/bin/sh\nexit 3\n")
        _out, status = Open3.capture2e({ 'BOSH_INSTALL_TARGET' => File.join(dir, 'install') },
                                       'bash', File.join(root, 'packages/bbr-agent/packaging'),
                                       chdir: dir)
        expect(status.exitstatus).to eq(3)
      end
    end
  end

  describe 'config/' do
    it 'names the release bbr-agent and a blobstore for final releases' do
      final = YAML.safe_load(File.read(File.join(root, 'config/final.yml')))
      expect(final['name']).to eq('bbr-agent')
      expect(final.dig('blobstore', 'provider')).to be_a(String)
    end

    it 'records only blobs that a package uses' do
      blobs = YAML.safe_load(File.read(File.join(root, 'config/blobs.yml'))) || {}
      expect(blobs).to be_a(Hash)
      expect(blobs.keys - package_spec['files']).to be_empty
    end
  end
end
